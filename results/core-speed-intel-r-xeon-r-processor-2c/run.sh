#!/bin/bash
# From the repository root: 12 pairs, CPU 0 then CPU 1, one fresh process each; one line per pair.
for i in $(seq 1 12); do
  echo "$(date -u +%T) $(python results/core-speed-intel-r-xeon-r-processor-2c/loop.py 0) | $(python results/core-speed-intel-r-xeon-r-processor-2c/loop.py 1)"
done
