# Lines for .ci/run, before `make test` (to paste there, or `source .ci/slurm-install.sh`).
# tests/test_slurm.py starts a single-node SLURM cluster from Debian's packages: install them,
# and make a missing SLURM fail those tests instead of skipping them.
if [ ! -x /usr/sbin/slurmctld ] || [ ! -x /usr/sbin/slurmd ] || [ ! -x /usr/sbin/munged ] \
    || ! command -v sbatch >/dev/null; then
    sudo=$([ "$(id -u)" -eq 0 ] || echo sudo)
    # DPkg::Lock::Timeout: wait up to 5 min for another apt or dpkg instead of failing at once
    $sudo apt-get update -qq -o DPkg::Lock::Timeout=300
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq -o DPkg::Lock::Timeout=300 \
        slurmctld slurmd slurm-client munge >/dev/null
fi
export REQUIRE_SLURM=1  # here a missing SLURM fails tests/test_slurm.py instead of skipping it
