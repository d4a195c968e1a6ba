"""Stand-ins for Slurm's ``srun`` and ``scontrol`` on a machine without
Slurm, for the tests of tools/slurm_train.sh and slurm_test.sh.

``srun`` parses the options the scripts pass, records them (and the
command) as JSON in ``$SRUN_RECORD`` if set, and, unless ``$SRUN_DRY`` is
set, starts ``--ntasks`` copies of the command on this host with the
variables a real srun gives every task and mmengine's slurm launcher reads
(SLURM_PROCID, SLURM_LOCALID, SLURM_NTASKS, SLURM_NODELIST, ...). Its exit
status is the first non-zero one of the tasks, like ``--kill-on-bad-exit``
without the killing. ``scontrol show hostname LIST`` prints 127.0.0.1.
"""
import os
import os.path as osp
import stat
import sys

SRUN = r'''#!PYTHON
import json, os, subprocess, sys

args = sys.argv[1:]
options = {}
while args and args[0].startswith('-'):
    arg = args.pop(0)
    if arg == '-p':
        options['partition'] = args.pop(0)
    elif '=' in arg:
        key, value = arg.lstrip('-').split('=', 1)
        options[key] = value
    else:
        options[arg.lstrip('-')] = True
record = os.environ.get('SRUN_RECORD')
if record:
    with open(record, 'w') as f:
        json.dump(dict(options=options, command=args), f)
if os.environ.get('SRUN_DRY'):
    sys.exit(0)
ntasks = int(options.get('ntasks', 1))
per_node = int(options.get('ntasks-per-node', ntasks))
if per_node < ntasks:
    sys.exit('stand-in srun: one node only (ntasks-per-node >= ntasks)')
tasks = []
for rank in range(ntasks):
    env = dict(os.environ, SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank),
               SLURM_NTASKS=str(ntasks), SLURM_NNODES='1', SLURM_NODEID='0',
               SLURM_NODELIST='standin-node', SLURM_JOB_ID='1',
               SLURM_JOB_NAME=options.get('job-name', ''),
               SLURM_CPUS_PER_TASK=str(options.get('cpus-per-task', 1)))
    tasks.append(subprocess.Popen(args, env=env))
codes = [task.wait() for task in tasks]
sys.exit(next((c for c in codes if c), 0))
'''

SCONTROL = r'''#!/usr/bin/env bash
if [ "$1" = show ] && [ "$2" = hostname ]; then echo 127.0.0.1; exit 0; fi
echo "stand-in scontrol: unsupported: $*" >&2; exit 1
'''


def install_standins(bin_dir: str) -> str:
    """Write ``srun`` and ``scontrol`` into ``bin_dir``; return a PATH
    with ``bin_dir`` first."""
    os.makedirs(bin_dir, exist_ok=True)
    for name, text in (('srun', SRUN.replace('PYTHON', sys.executable, 1)),
                       ('scontrol', SCONTROL)):
        path = osp.join(bin_dir, name)
        with open(path, 'w') as f:
            f.write(text)
        os.chmod(path, os.stat(path).st_mode | stat.S_IEXEC)
    return bin_dir + os.pathsep + os.environ.get('PATH', '')
