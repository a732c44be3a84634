"""``bjobs -l`` as a real OpenLava 4.0 prints it, read where ``bjobs -o`` does not exist.

The texts below were captured from the OpenLava that tests/cluster/openlava-cluster builds (the
live tests in tests/cluster/test_openlava.py read the same command); here they pin the cases a
short test cannot wait for: the 80-column wrapping mid-word, pending reasons, array elements.
"""

from __future__ import annotations

from hpcbridge.backends.lsf import parse_bjobs_long

EXITED_WITH_7 = '\nJob Id <109>, Job Name <t1>, User <root>, Project <default>, Status <EXIT>, Que\n                     ue <normal>, Command <#!/bin/bash;#BSUB -J t1;#BSUB -n 2;#\n                     BSUB -R "span[ptile=2]";#BSUB -W 10;#BSUB -o t1-%J.out;ech\n                     o hosts=$LSB_MCPU_HOSTS; echo jobid=$LSB_JOBID; blaunch -z\n                     "vm vm" hostname; exit 7>\nSun Dec  6 20:27:50: Submitted from host <vm>, CWD </tmp/oltest/j>, Output File\n                     <t1-%J.out>, 2 Processors Requested, Requested Resources <\n                     span[ptile=2]>;\n\n RUNLIMIT                \n 10.0 min of vm          \nSun Dec  6 20:27:51: Started on 2 Hosts/Processors <vm> <vm>, Execution Home </\n                     root>, Execution CWD </tmp/oltest/j>;\nSun Dec  6 20:27:51: Exited with exit code 7. The CPU time used is 0.0 seconds.\n                     \n\n SCHEDULING PARAMETERS:\n           r15s   r1m  r15m   ut      pg    io   ls    it    tmp    swp    mem\n loadSched   -     -     -     -       -     -    -     -     -      -      -  \n loadStop    -     -     -     -       -     -    -     -     -      -      -  \n'

KILLED = '\nJob Id <103>, Job Name <run>, User <root>, Project <default>, Status <EXIT>, Qu\n                     eue <normal>, Command <sleep 60>\nSun Dec  6 20:31:53: Submitted from host <vm>, CWD </tmp/hpcb-ol-dev>, Output F\n                     ile <run.out>;\nSun Dec  6 20:31:54: Started on <vm>, Execution Home </root>, Execution CWD </t\n                     mp/hpcb-ol-dev>;\nSun Dec  6 20:32:00: Exited with exit code 130. The CPU time used is 0.0 second\n                     s.\n\n SCHEDULING PARAMETERS:\n           r15s   r1m  r15m   ut      pg    io   ls    it    tmp    swp    mem\n loadSched   -     -     -     -       -     -    -     -     -      -      -  \n loadStop    -     -     -     -       -     -    -     -     -      -      -  \n\n'

PENDING = '\nJob Id <106>, Job Name <pend>, User <root>, Project <default>, Status <PEND>, Q\n                     ueue <normal>, Command <true>\nSun Dec  6 20:32:41: Submitted from host <vm>, CWD </tmp/hpcb-ol-dev>, Output F\n                     ile </tmp/p-%J.out>, 8 Processors Requested;\n PENDING REASONS:\n Not enough job slot(s): 1 host;\n\n SCHEDULING PARAMETERS:\n           r15s   r1m  r15m   ut      pg    io   ls    it    tmp    swp    mem\n loadSched   -     -     -     -       -     -    -     -     -      -      -  \n loadStop    -     -     -     -       -     -    -     -     -      -      -  \n\n'

ARRAY = '\nJob Id <102[2]>, Job Name <arr[2]>, User <root>, Project <default>, Status <DON\n                     E>, Queue <normal>, Command <echo $LSB_JOBINDEX>\nSun Dec  6 20:31:53: Submitted from host <vm>, CWD </tmp/hpcb-ol-dev>, Output F\n                     ile <arr-%J_%I.out>;\nSun Dec  6 20:31:54: [2] started on <vm>, Execution Home </root>, Execution CWD\n                     </tmp/hpcb-ol-dev>;\nSun Dec  6 20:31:54: Done successfully. The CPU time used is 0.0 seconds.\n\n SCHEDULING PARAMETERS:\n           r15s   r1m  r15m   ut      pg    io   ls    it    tmp    swp    mem\n loadSched   -     -     -     -       -     -    -     -     -      -      -  \n loadStop    -     -     -     -       -     -    -     -     -      -      -  \n------------------------------------------------------------------------------\n\nJob Id <102[1]>, Job Name <arr[1]>, User <root>, Project <default>, Status <DON\n                     E>, Queue <normal>, Command <echo $LSB_JOBINDEX>\nSun Dec  6 20:31:53: Submitted from host <vm>, CWD </tmp/hpcb-ol-dev>, Output F\n                     ile <arr-%J_%I.out>;\nSun Dec  6 20:31:54: [1] started on <vm>, Execution Home </root>, Execution CWD\n                     </tmp/hpcb-ol-dev>;\nSun Dec  6 20:31:54: Done successfully. The CPU time used is 0.0 seconds.\n\n SCHEDULING PARAMETERS:\n           r15s   r1m  r15m   ut      pg    io   ls    it    tmp    swp    mem\n loadSched   -     -     -     -       -     -    -     -     -      -      -  \n loadStop    -     -     -     -       -     -    -     -     -      -      -  \n\n'


def test_openlava_exit_code_and_output_file_joined_across_wrapped_lines() -> None:
    assert parse_bjobs_long(EXITED_WITH_7, "109") == {
        "stat": "EXIT", "exit_code": "7", "output_file": "/tmp/oltest/j/t1-109.out"}


def test_openlava_killed_job_keeps_its_signal_exit_code() -> None:
    fields = parse_bjobs_long(KILLED, "103")
    assert fields == {"stat": "EXIT", "exit_code": "130", "output_file": "/tmp/hpcb-ol-dev/run.out"}


def test_openlava_pending_reasons_and_an_absolute_output_file() -> None:
    assert parse_bjobs_long(PENDING, "106") == {
        "stat": "PEND", "output_file": "/tmp/p-106.out", "pend_reason": "Not enough job slot(s): 1 host"}


def test_openlava_array_reads_its_first_element_with_the_index_in_the_output_file() -> None:
    assert parse_bjobs_long(ARRAY, "102") == {"stat": "DONE", "output_file": "/tmp/hpcb-ol-dev/arr-102_2.out"}
    assert parse_bjobs_long(ARRAY, "102[1]")["output_file"] == "/tmp/hpcb-ol-dev/arr-102_1.out"
