#!/bin/sh
# Stop the Ray of cluster-onprem.yaml, and no other Ray, on this host, or on every host of the cluster:
#   ray exec cluster-onprem.yaml 'sh ~/ablate/cluster-onprem-stop.sh --cluster'   # from your machine, before `ray down`
#   sh ~/ablate/cluster-onprem-stop.sh                                              # on one host (start commands do)
# Why not `ray stop`: it stops every Ray this account runs on the host (another cluster's, a SLURM job's,
# a notebook's). Why not `ray down` alone: with Ray's local provider it stops nothing on the workers
# (their log monitor and agents outlive the head: measured, tests/test_onprem.py), and `ray stop` on the
# head only where `ray` is on the login PATH.
# This cluster's processes are those whose command line names its temp dir, and those holding a file in
# it open: the agents and trial workers its raylet started, renamed `ray::...`, also once orphaned.
set -u
TEMP=/tmp/ray-ablate-onprem   # --temp-dir in cluster-onprem.yaml's start commands
if [ "${1:-}" = "--cluster" ]; then
  # On the head: each worker first, over ssh with the key and user `ray up` put in its bootstrap config.
  ~/ablate-venv/bin/python -c 'import os, yaml
c = yaml.safe_load(open(os.path.expanduser("~/ray_bootstrap_config.yaml")))
print("\n".join(c["auth"]["ssh_user"] + "@" + ip for ip in c["provider"]["worker_ips"]))' |
  while read -r dest; do
    ssh -n -i ~/ray_bootstrap_key.pem -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes \
        -o ConnectTimeout=20 "$dest" 'sh ~/ablate/cluster-onprem-stop.sh' || echo "could not stop Ray on $dest" >&2
  done
fi
pkill -KILL -f -- "[/]${TEMP#/}/"   # "[/]": the pattern must not match this pkill
for p in /proc/[0-9]*; do
  if ls -l "$p/fd" 2>/dev/null | grep -q -- "-> $TEMP/"; then
    kill -KILL "${p#/proc/}" 2>/dev/null
  fi
done
true
