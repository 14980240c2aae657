#!/usr/bin/env bash
# One results table and plot from every results-suite log (the H200 runs and the CPU runs of
# experiments/suite_cpu.sh): the logs' "done" lines are merged (a later log's run replaces an
# earlier one's) and run_suite.py --from-log prints the table. Run from the repository root.
set -eu
PY=${PY:-.venv/bin/python}
R=experiments/results
cat $R/suite_h200_log.txt $R/suite_h200_time_decay_log.txt $R/suite_*_cpu_log.txt \
  | grep "^done" > $R/suite_all_log.txt
$PY experiments/run_suite.py --from-log $R/suite_all_log.txt \
  --datasets time_frequency time_decay time_decay-hours time_decay-ns JapaneseVowels \
             JapaneseVowels-drop30 JapaneseVowels-drop50 JapaneseVowels-drop70 pbcseq nafld \
  --discs standard-mamba standard-zoh asymmetric-mamba asymmetric-zoh asymmetric-dirac scaled-zoh additive-zoh \
  --baselines gru-gap gbt --out $R/suite.md --plot $R/suite.png
