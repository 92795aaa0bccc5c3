# Sourced by the Go tools' run.sh scripts (bench/readsnap, bench/lease,
# tests/e2e/concprobe): builds the tool in $1 (a folder with main.go) into $2
# with Debian's Go 1.19 in GOPATH mode, offline, against Debian's
# golang-etcd-server-dev clientv3 sources (installing golang-go and
# golang-etcd-server-dev with apt-get if missing). Rebuilds only when main.go
# is newer than the binary. $3 names the caller in messages.
#
#   . "$repo/bench/lib/go-tool.sh"; build_go_tool "$here" "$bin" lease/run.sh
build_go_tool() {
    local src="$1" bin="$2" who="$3"
    local gocode=/usr/share/gocode
    # Debian's Go (golang-go), which matches Debian's clientv3 sources, even
    # where a newer Go comes first on PATH.
    local GO=/usr/lib/go/bin/go
    local need_pkgs=()
    [ -x "$GO" ] || need_pkgs+=(golang-go)
    [ -d "$gocode/src/go.etcd.io/etcd/clientv3" ] && \
        [ -d "$gocode/src/go.etcd.io/etcd/etcdserver/api/v3lock/v3lockpb" ] || need_pkgs+=(golang-etcd-server-dev)
    if [ "${#need_pkgs[@]}" -gt 0 ]; then
        echo "$who: installing ${need_pkgs[*]} via apt-get" >&2
        local sudo=
        [ "$(id -u)" -eq 0 ] || sudo=sudo
        $sudo apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_pkgs[@]}" >&2
    fi
    if [ ! -x "$bin" ] || [ "$src/main.go" -nt "$bin" ]; then
        mkdir -p "$(dirname "$bin")" /tmp/lg-gopath
        echo "$who: building $bin" >&2
        (cd "$src" && env -u GOROOT GO111MODULE=off GOFLAGS= GOTOOLCHAIN=local GOPROXY=off \
            GOPATH=/tmp/lg-gopath:$gocode GOCACHE="${GOCACHE:-/tmp/lg-gocache}" "$GO" build -o "$bin.tmp.$$" .) >&2
        mv -f "$bin.tmp.$$" "$bin"
    fi
}
