#!/bin/sh
# Runs this cell again from the repository root.
./sm run --kernel 6.12.117+deb13-amd64 --stap deb:5.6-1 /work/wt-report/tests/stap/begin_end.stp /work/wt-report/tests/stap/uprobes.stp /work/wt-report/tests/stap/timer.stp
