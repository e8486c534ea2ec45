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
# network fault injection in tests.
ensure_system_packages() {
  apt_install mariadb-server mariadb-client clang lld libclang-dev nftables iproute2 ca-certificates
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
