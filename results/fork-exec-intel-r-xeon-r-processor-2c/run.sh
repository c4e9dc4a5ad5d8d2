#!/bin/bash
# From the repository root: fork and exec worker starts alternating, 4 invocations each, ort and torch.
# Made the sub-folders fork/ and exec/ here (at commit 25279a1); then: python analyze.py > analysis.txt
HERE=results/fork-exec-intel-r-xeon-r-processor-2c
for i in 1 2 3 4; do
  for mode in fork exec; do
    for engine in ort torch; do
      echo "$(date -u +%T) $mode $engine $i"
      RBENCH_WORKER_START=$mode rbench compare resnet20 plain20 resnet20 --engine $engine \
        --out $HERE/$mode/workers-$engine-$i > /dev/null
    done
  done
done
