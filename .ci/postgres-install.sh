# PostgreSQL for tests/test_postgres.py (a throw-away cluster run as `nobody`, a real mlflow server
# on it). Source it from .ci/run before `make test`, not run it:
#     . .ci/postgres-install.sh
# It installs Debian's server binaries (/usr/lib/postgresql/<ver>/bin) when they are missing and
# exports REQUIRE_POSTGRES=1, so that without them that test fails instead of being skipped.
if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
    sudo=$([ "$(id -u)" -eq 0 ] || echo sudo)
    $sudo apt-get update -qq
    # Waits up to 10 minutes for another apt/dpkg holding the lock instead of failing at once.
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq -o DPkg::Lock::Timeout=600 \
        postgresql >/dev/null
fi
export REQUIRE_POSTGRES=1
