# Installs what building and testing need when it is missing. Sourced by deploy/sandbox
# and .ci/run; safe to run again (it only installs what is absent).

apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing Debian packages: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# mariadb-server: the live database of tests and sandbox; clang, lld, libclang-dev:
# the linker setup in .cargo/config.toml and RocksDB's build; nftables and iproute2:
# network fault injection in tests; mariadb-backup: seeding a new MariaDB replica from
# a donor (node bootstrap); cryptsetup: LUKS on instance store (bootstrap, tested on a
# loop device); chromium and chromium-driver: the web UI's tests drive a real headless
# browser through WebDriver.
ensure_system_packages() {
  apt_install mariadb-server mariadb-client mariadb-backup cryptsetup clang lld libclang-dev nftables iproute2 \
    ca-certificates chromium chromium-driver
}

# rustfmt and clippy for the checks that run before the tests.
ensure_rust_components() {
  if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    rustup component add rustfmt clippy
  fi
}

# moto_server (the AWS endpoint of tests and the sandbox) and the aws CLI (an
# independent check of what the peers did to AWS), from PyPI.
ensure_python_packages() {
  local missing=()
  command -v moto_server >/dev/null 2>&1 || missing+=("moto[server]>=5.2,<6")
  command -v aws >/dev/null 2>&1 || missing+=("awscli")
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing Python packages: ${missing[*]}"
    python3 -m pip install --quiet --disable-pip-version-check "${missing[@]}"
    command -v pyenv >/dev/null 2>&1 && pyenv rehash
    # A per-user install puts its scripts here.
    local user_bin
    user_bin="$(python3 -m site --user-base)/bin"
    case ":$PATH:" in *":$user_bin:"*) ;; *) export PATH="$PATH:$user_bin" ;; esac
  fi
  command -v moto_server >/dev/null 2>&1 || { echo "moto_server is still not on PATH" >&2; return 1; }
}

# Real MySQL (Oracle MySQL 9.7 from Debian's unstable suite) for the `mysql` flavor of
# the tests and the sandbox. It needs a newer glibc than this machine's, so it lives in
# a minimal Debian root of its own, outside the repository, run through that root's
# loader (DESIGN.md section 7). Built once (about 30 s), checked on every call, rebuilt
# when it no longer runs. Exports ORCH_MYSQL_ROOT, where the test bed looks for it.
# Only a directory this function made (marked `.orch-made`) is ever deleted.
mysql_root_dir() {
  echo "${ORCH_MYSQL_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/orch/mysql-root}"
}

mysql_root_works() {
  local root="$1"
  [ -f "$root/.orch-ready" ] || return 1
  "$root/lib64/ld-linux-x86-64.so.2" \
    --library-path "$root/usr/lib/x86_64-linux-gnu:$root/lib/x86_64-linux-gnu" \
    "$root/usr/sbin/mysqld" --version 2>/dev/null | grep -q "Ver 9\."
}

# Unmounts what a killed debootstrap may have left mounted under $1, then removes it.
remove_built_root() {
  local dir="$1" sudo="$2" mount
  [ -e "$dir" ] || return 0
  if [ ! -f "$dir/.orch-made" ]; then
    echo "$dir exists but was not made by ensure_mysql_root: remove it or set ORCH_MYSQL_ROOT" >&2
    return 1
  fi
  awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r | while read -r mount; do
    $sudo umount -l "$mount" || true
  done
  $sudo rm -rf --one-file-system "$dir"
}

ensure_mysql_root() {
  local root
  root="$(mysql_root_dir)"
  export ORCH_MYSQL_ROOT="$root"
  if mysql_root_works "$root"; then
    echo "MySQL root: $root"
    return 0
  fi
  mkdir -p "$(dirname "$root")"
  # One builder at a time (the tests and the sandbox may both ask).
  exec 9>"$root.lock"
  flock 9
  if mysql_root_works "$root"; then
    echo "MySQL root: $root"
    exec 9>&-
    return 0
  fi
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo -n"
    $sudo true 2>/dev/null || { echo "building the MySQL root needs root or password-less sudo" >&2; return 1; }
  fi
  apt_install debootstrap
  [ -e "$root" ] && echo "the MySQL root at $root does not run: building it again"
  echo "building the MySQL root (Debian sid, mysql-server-core) in $root"
  local building="$root.building"
  remove_built_root "$building" "$sudo" || return 1
  remove_built_root "$root" "$sudo" || return 1
  mkdir -p "$building" && touch "$building/.orch-made"
  local log="$root.debootstrap.log"
  if ! $sudo debootstrap --variant=minbase --include=mysql-server-core,mysql-client-core \
      sid "$building" http://deb.debian.org/debian >"$log" 2>&1; then
    echo "debootstrap failed; the last lines of $log:" >&2
    tail -n 5 "$log" >&2
    return 1
  fi
  [ -z "$sudo" ] || $sudo chown -R "$(id -u):$(id -g)" "$building"
  touch "$building/.orch-ready"
  mv -T "$building" "$root"
  exec 9>&-
  mysql_root_works "$root" || { echo "the MySQL root at $root was built but mysqld does not run" >&2; return 1; }
  echo "MySQL root ready: $("$root/lib64/ld-linux-x86-64.so.2" \
    --library-path "$root/usr/lib/x86_64-linux-gnu:$root/lib/x86_64-linux-gnu" \
    "$root/usr/sbin/mysqld" --version) in $root"
}
