#!/usr/bin/env bash
# Wisp quick start: set up this host and run Wisp.
#
#   sudo ./scripts/install.sh
#
# Installs the Debian packages Wisp needs, builds wispd / wisp-keeper / wisp (release), installs
# them into $WISP_PREFIX/bin, starts the daemon (a systemd unit when systemd runs the host, else
# a background process), builds the Debian base image, waits for the API, creates the sprite
# `hello` and runs a command in it. Safe to run again: it upgrades the binaries, restarts the
# daemon only when they changed (sprites keep running across restarts) and reuses the image.
#
# Knobs (environment):
#   WISP_PREFIX=/usr/local          binaries go to $WISP_PREFIX/bin
#   WISP_DATA_DIR=/var/lib/wisp     state, admin token, log (wispd.log) and pid file
#   WISP_LISTEN=127.0.0.1:7575      API address
#   WISP_IMAGE_DIR=$WISP_DATA_DIR/images   where the base image is built
#   WISP_SKIP_BUILD=1               do not build: install the binaries found in $WISP_BIN_DIR
#   WISP_BIN_DIR=DIR                with WISP_SKIP_BUILD=1 (default: <repo>/target/release)
#   WISP_NO_SYSTEMD=1               run wispd in the background even when systemd is PID 1
#   WISP_NO_APT=1                   do not install Debian packages (they must be there already)
#   WISP_HELLO=hello                name of the sprite created to prove the setup ("" = none)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PREFIX=${WISP_PREFIX:-/usr/local}
DATA_DIR=${WISP_DATA_DIR:-/var/lib/wisp}
LISTEN=${WISP_LISTEN:-127.0.0.1:7575}
IMAGE_DIR=${WISP_IMAGE_DIR:-$DATA_DIR/images}
SKIP_BUILD=${WISP_SKIP_BUILD:-0}
HELLO=${WISP_HELLO-hello}
MIN_RUST=1.85
BINARIES=(wispd wisp-keeper wisp)

if [[ -t 1 ]]; then B=$'\033[1m' G=$'\033[32m' R=$'\033[31m' N=$'\033[0m'; else B='' G='' R='' N=''; fi
step() { printf '%s==> %s%s\n' "$B" "$*" "$N"; }
info() { printf '    %s\n' "$*"; }
die() {
    printf '%sinstall.sh: error:%s %s\n' "$R" "$N" "$*" >&2
    exit 1
}

[[ $(id -u) -eq 0 ]] || die "run me as root: sudo $0"
[[ $(uname -s) == Linux ]] || die "Wisp runs on Linux only"
mkdir -p "$DATA_DIR"
DATA_DIR=$(cd "$DATA_DIR" && pwd)

uses_systemd() {
    [[ ${WISP_NO_SYSTEMD:-0} != 1 ]] && [[ -d /run/systemd/system ]] &&
        [[ $(ps -p 1 -o comm= 2>/dev/null) == systemd ]]
}

# ---------------------------------------------------------------------------------------------
step "Debian packages"
PKGS=(debootstrap btrfs-progs ca-certificates curl iproute2 util-linux procps)
if [[ $SKIP_BUILD != 1 ]]; then PKGS+=(build-essential pkg-config); fi
# Nice to have; not available everywhere (debian-archive-keyring is in Ubuntu's universe).
OPTIONAL_PKGS=(debian-archive-keyring psmisc nftables)
if [[ ${WISP_NO_APT:-0} == 1 ]]; then
    info "skipped (WISP_NO_APT=1)"
else
    command -v apt-get >/dev/null || die "apt-get not found: this script supports Debian and Ubuntu hosts"
    installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
    missing=() missing_opt=()
    for p in "${PKGS[@]}"; do installed "$p" || missing+=("$p"); done
    for p in "${OPTIONAL_PKGS[@]}"; do installed "$p" || missing_opt+=("$p"); done
    export DEBIAN_FRONTEND=noninteractive
    if ((${#missing[@]} + ${#missing_opt[@]})); then apt-get update -qq; fi
    if ((${#missing[@]})); then
        info "installing: ${missing[*]}"
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
            die "apt-get install ${missing[*]} failed"
    fi
    for p in "${missing_opt[@]}"; do
        apt-get install -y -qq --no-install-recommends "$p" >/dev/null 2>&1 ||
            info "note: optional package $p could not be installed"
    done
    ((${#missing[@]} + ${#missing_opt[@]})) || info "all present"
fi

# ---------------------------------------------------------------------------------------------
version_ge() { [[ $(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1) == "$2" ]]; }

find_cargo() {
    local c
    for c in "$(command -v cargo 2>/dev/null || true)" "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" \
        /root/.cargo/bin/cargo ${SUDO_USER:+"$(getent passwd "$SUDO_USER" | cut -d: -f6)/.cargo/bin/cargo"}; do
        if [[ -n $c && -x $c ]]; then
            echo "$c"
            return 0
        fi
    done
    return 1
}

if [[ $SKIP_BUILD == 1 ]]; then
    SRC_BIN=${WISP_BIN_DIR:-$REPO/target/release}
    step "Using prebuilt binaries from $SRC_BIN"
else
    step "Building Wisp (release)"
    if ! CARGO=$(find_cargo); then
        info "cargo not found; trying Debian's cargo and rustc (Wisp needs Rust >= $MIN_RUST)"
        apt-get install -y -qq cargo rustc >/dev/null || die "could not install cargo: install a Rust toolchain (rustup, Rust >= $MIN_RUST) and re-run"
        CARGO=$(command -v cargo) || die "cargo is still missing"
    fi
    RUSTC="$(dirname "$CARGO")/rustc"
    [[ -x $RUSTC ]] || RUSTC=rustc
    have=$("$RUSTC" --version | awk '{print $2}')
    version_ge "${have%%-*}" "$MIN_RUST" ||
        die "Rust $have at $RUSTC is too old; Wisp needs >= $MIN_RUST (Debian 12's packaged Rust is 1.63). Install a newer toolchain with rustup and re-run."
    info "$("$CARGO" --version) at $CARGO"
    PATH="$(dirname "$CARGO"):$PATH"
    export PATH
    build=("$CARGO" build --release --locked -p wispd -p wisp-cli)
    if [[ -n ${SUDO_USER:-} && $SUDO_USER != root && $(stat -c %U "$REPO") == "$SUDO_USER" ]]; then
        # Build as the owner of the checkout, so target/ stays theirs.
        user_home=$(getent passwd "$SUDO_USER" | cut -d: -f6)
        (cd "$REPO" && runuser -u "$SUDO_USER" -- env HOME="$user_home" PATH="$PATH" "${build[@]}")
    else
        (cd "$REPO" && "${build[@]}")
    fi
    SRC_BIN=${CARGO_TARGET_DIR:-$REPO/target}/release
fi
[[ -d $SRC_BIN ]] || die "$SRC_BIN does not exist"
SRC_BIN=$(cd "$SRC_BIN" && pwd)
for b in "${BINARIES[@]}"; do
    [[ -x $SRC_BIN/$b ]] || die "$SRC_BIN/$b is missing (build with: cargo build --release -p wispd -p wisp-cli)"
done

# ---------------------------------------------------------------------------------------------
step "Installing binaries into $PREFIX/bin"
mkdir -p "$PREFIX/bin"
changed=0
for b in "${BINARIES[@]}"; do
    dst=$PREFIX/bin/$b
    if [[ -e $dst ]] && cmp -s "$SRC_BIN/$b" "$dst"; then
        info "$b: unchanged"
        continue
    fi
    # Copy then rename: replacing a running executable in place fails with ETXTBSY.
    install -m 0755 "$SRC_BIN/$b" "$dst.new.$$"
    mv -f "$dst.new.$$" "$dst"
    changed=1
    info "$b: installed"
done
WISPD=$PREFIX/bin/wispd
WISP=$PREFIX/bin/wisp

# ---------------------------------------------------------------------------------------------
DAEMON_ARGS=(--data-dir "$DATA_DIR" --listen "$LISTEN" --image-dir "$IMAGE_DIR"
    --keeper-bin "$PREFIX/bin/wisp-keeper")
PID_FILE=$DATA_DIR/wispd.pid
LOG_FILE=$DATA_DIR/wispd.log

daemon_pid() {
    local pid
    [[ -f $PID_FILE ]] || return 1
    pid=$(cat "$PID_FILE")
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
    # The pid must still be a wispd (pids are recycled); its exe may show " (deleted)" after an upgrade.
    [[ $(readlink "/proc/$pid/exe" 2>/dev/null) == "$WISPD"* ]] || return 1
    echo "$pid"
}

show_log() {
    if uses_systemd; then
        journalctl -u wispd.service -n 40 --no-pager >&2 || true
    elif [[ -f $LOG_FILE ]]; then
        tail -n 40 "$LOG_FILE" >&2
    fi
}

if uses_systemd; then
    step "Starting wispd (systemd unit wispd.service)"
    unit=/etc/systemd/system/wispd.service
    new_unit=$(
        cat <<EOF
[Unit]
Description=Wisp daemon (Sprites API for this host)
Documentation=file://$REPO/README.md
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
ExecStart=$WISPD ${DAEMON_ARGS[*]}
Environment=RUST_LOG=info
Restart=on-failure
RestartSec=2
# Sprites (their keepers) must survive restarts and upgrades of wispd: stop only wispd itself.
KillMode=process
TasksMax=infinity
LimitNOFILE=1048576

[Install]
WantedBy=multi-user.target
EOF
    )
    if [[ ! -f $unit ]] || [[ $(cat "$unit") != "$new_unit" ]]; then
        printf '%s\n' "$new_unit" >"$unit"
        systemctl daemon-reload
        changed=1
        info "wrote $unit"
    fi
    systemctl enable --quiet wispd.service
    if [[ $changed == 1 ]] || ! systemctl is-active --quiet wispd.service; then
        systemctl restart wispd.service
        info "restarted (logs: journalctl -u wispd)"
    else
        info "already running"
    fi
else
    step "Starting wispd (background process; log $LOG_FILE)"
    if pid=$(daemon_pid); then
        if [[ $changed == 1 ]]; then
            info "restarting wispd (pid $pid) for the new binaries; sprites keep running"
            kill -TERM "$pid"
            for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -0 "$pid" 2>/dev/null && die "wispd (pid $pid) did not stop after SIGTERM"
        else
            info "already running (pid $pid)"
        fi
    fi
    if ! daemon_pid >/dev/null; then
        # setsid: its own session, so the daemon outlives this shell and its terminal.
        RUST_LOG=${RUST_LOG:-info} nohup setsid "$WISPD" "${DAEMON_ARGS[@]}" \
            >>"$LOG_FILE" 2>&1 </dev/null &
        echo $! >"$PID_FILE"
        sleep 0.5
        daemon_pid >/dev/null || {
            show_log
            die "wispd exited at once; see $LOG_FILE"
        }
        info "started (pid $(cat "$PID_FILE"))"
    fi
fi

# ---------------------------------------------------------------------------------------------
step "Base image (Debian bookworm, built once; about a minute)"
if "$WISPD" image build --help >/dev/null 2>&1; then
    "$WISPD" image build --data-dir "$DATA_DIR" --image-dir "$IMAGE_DIR" ||
        die "building the base image failed (see above)"
else
    # A wispd without the `image` subcommand builds the image itself when it starts.
    info "waiting for wispd to build it into $IMAGE_DIR"
    for i in $(seq 1800); do
        [[ -f $IMAGE_DIR/debian-bookworm/READY ]] && break
        ((i % 60 == 0)) && info "still building ($((i / 2)) s)"
        sleep 0.5
    done
    [[ -f $IMAGE_DIR/debian-bookworm/READY ]] || {
        show_log
        die "the base image was not ready after 15 minutes"
    }
fi
info "ready: $IMAGE_DIR/debian-bookworm/rootfs"

# ---------------------------------------------------------------------------------------------
step "Waiting for the API"
api_addr() {
    local hp=$LISTEN
    # Port 0 means "any": the daemon writes what it bound to <data-dir>/wispd.addr.
    if [[ $hp == *:0 && -s $DATA_DIR/wispd.addr ]]; then hp=$(tr -d '[:space:]' <"$DATA_DIR/wispd.addr"); fi
    hp=${hp/#0.0.0.0:/127.0.0.1:}
    hp=${hp/#\[::\]:/[::1]:}
    echo "$hp"
}
TOKEN_FILE=$DATA_DIR/admin-token
code=000
for _ in $(seq 120); do
    if [[ -s $TOKEN_FILE ]]; then
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 \
            -H "Authorization: Bearer $(cat "$TOKEN_FILE")" "http://$(api_addr)/v1/sprites" || true)
        [[ $code == 200 ]] && break
    fi
    sleep 0.5
done
if [[ $code != 200 ]]; then
    show_log
    die "the API at http://$(api_addr) did not answer 200 within 60 s (last status $code)"
fi
API_URL=http://$(api_addr)
info "$API_URL answers"

# ---------------------------------------------------------------------------------------------
WISP_TOKEN=$(cat "$TOKEN_FILE")
export WISP_API_URL=$API_URL WISP_TOKEN
if [[ -n $HELLO ]]; then
    step "Sprite '$HELLO'"
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $WISP_TOKEN" \
        "$API_URL/v1/sprites/$HELLO")
    case $code in
    200) info "exists" ;;
    404) "$WISP" create "$HELLO" | sed 's/^/    created: /' ;;
    *) die "GET /v1/sprites/$HELLO answered $code" ;;
    esac
    out=$("$WISP" exec -s "$HELLO" -- echo "wisp is ready") || die "wisp exec in '$HELLO' failed"
    [[ $out == "wisp is ready" ]] || die "wisp exec printed '$out', expected 'wisp is ready'"
    printf '    %s%s%s\n' "$G" "$out" "$N"
fi

# ---------------------------------------------------------------------------------------------
cat <<EOF

${B}Wisp is running.${N} API: $API_URL   data: $DATA_DIR   token: $TOKEN_FILE
EOF
if [[ $API_URL != http://127.0.0.1:7575 || $DATA_DIR != /var/lib/wisp ]]; then
    cat <<EOF
Point the CLI at this daemon first:
    export WISP_API_URL=$API_URL WISP_DATA_DIR=$DATA_DIR
EOF
fi
case ":$PATH:" in *":$PREFIX/bin:"*) ;; *) echo "Add $PREFIX/bin to your PATH." ;; esac
cat <<EOF
Next steps (as root, or with WISP_TOKEN set to the token):
    wisp create my-sprite
    wisp exec -s my-sprite -- uname -a
    wisp console -s my-sprite          # interactive shell; detach with Ctrl-\\
    wisp use my-sprite                 # later commands in this directory use it
Python SDK:  pip install sprites-py==0.7.2, then
    SpritesClient(token=open("$TOKEN_FILE").read().strip(), base_url="$API_URL")
EOF
