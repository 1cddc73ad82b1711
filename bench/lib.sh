# Helpers shared by the bench scripts (sourced, not run).

# A free TCP port on 127.0.0.1.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits (up to 5 s) until something listens on 127.0.0.1:$1.
wait_port() {
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "port $1 did not open" >&2; return 1
}

# Installs Debian package $2 when command $1 is missing.
need() {
    if ! command -v "$1" >/dev/null 2>&1; then
        echo "installing $2 from Debian"
        SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
        $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends "$2" >/dev/null
    fi
}

# What every benchmark node's configuration ends with: no access log, no per-client
# connection cap (every benchmark client is 127.0.0.1), and one service for every host in
# front of the origin on 127.0.0.1:$1.
strata_config_tail() {
    cat <<EOF
[log]
access = "off"
[limits]
max_connections_per_client = 100000
[[service]]
name = "bench"
hosts = ["*"]
origins = ["http://127.0.0.1:$1"]
EOF
}
