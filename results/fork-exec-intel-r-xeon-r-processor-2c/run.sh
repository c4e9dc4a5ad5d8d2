#!/bin/bash
# alternate fork and exec worker starts, 4 invocations each, ort and torch
cd /work/measure
export PYTHONPATH=/work/measure
for i in 1 2 3 4; do
  for mode in fork exec; do
    for engine in ort torch; do
      echo "$(date +%T) $mode $engine $i"
      RBENCH_WORKER_START=$mode python -m bench compare resnet20 plain20 resnet20 --engine $engine --out /tmp/exp/$mode/workers-$engine-$i > /tmp/exp/$mode-$engine-$i.log 2>&1 || echo failed
    done
  done
done
echo finished
