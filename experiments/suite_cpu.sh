#!/usr/bin/env bash
# The results-suite runs made on a 2-core CPU (issue 13), each into its own log under
# experiments/results/; experiments/suite_table.sh then merges every log (these and the H200's)
# into one table and plot. Run from the repository root: bash experiments/suite_cpu.sh
set -u
PY=${PY:-.venv/bin/python}
R=experiments/results
ALL_DISCS="standard-mamba standard-zoh asymmetric-mamba asymmetric-zoh asymmetric-dirac scaled-zoh additive-zoh"
run() { name=$1; shift; echo "== $name: $*"; $PY experiments/run_suite.py --workers 2 "$@" > "$R/suite_${name}_cpu_log.txt" 2>&1; tail -1 "$R/suite_${name}_cpu_log.txt"; }
run pbcseq_more --datasets pbcseq --discs standard-zoh asymmetric-mamba asymmetric-dirac scaled-zoh --baselines
run time_decay_gbt --datasets time_decay --discs --baselines gbt
run nafld --datasets nafld --discs $ALL_DISCS
run jv --datasets JapaneseVowels --discs $ALL_DISCS
run time_frequency_more --datasets time_frequency --discs standard-zoh asymmetric-mamba asymmetric-dirac --baselines gbt
run jv_drop50_more --datasets JapaneseVowels-drop50 --discs standard-zoh asymmetric-mamba asymmetric-dirac scaled-zoh --baselines
run time_units --datasets time_decay time_decay-hours time_decay-ns --discs additive-zoh --baselines
run jv_drop30_70 --datasets JapaneseVowels-drop30 JapaneseVowels-drop70 --discs standard-mamba asymmetric-mamba additive-zoh
