#!/usr/bin/env bash
# Builds the pinned kube-apiserver and etcd for the end-to-end tests and prints the directory
# that holds them. Builds are cached under $HOME/.cache/coredns-istio, keyed by the versions
# pinned in the tool modules' go.mod files, so only a fresh machine pays the ~10 min build.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

# The version that follows a module path on its require line (block or single-line form).
required() { awk -v m="$1" '{for (i = 1; i < NF; i++) if ($i == m) {print $(i + 1); exit}}' "$2"; }
k8s_version=$(required k8s.io/kubernetes "$here/kube-apiserver/go.mod")
etcd_version=$(required go.etcd.io/etcd/server/v3 "$here/etcd/go.mod")
[ -n "$k8s_version" ] && [ -n "$etcd_version" ] || { echo "controlplane.sh: cannot read pinned versions" >&2; exit 1; }
# The build flags and main packages are part of the key: a change to them must rebuild.
key=$(cat "$0" "$here"/kube-apiserver/{go.mod,main.go} "$here"/etcd/{go.mod,main.go} | sha256sum | cut -c1-12)
dir="${HOME}/.cache/coredns-istio/controlplane/k8s-${k8s_version}-etcd-${etcd_version}-${key}"

build() { # name version module-dir ldflags...
	local name=$1 version=$2 mod=$3 out="$dir/$1"
	shift 3
	[ -x "$out" ] && return 0
	echo "building $name $version into $dir (cached for later runs)" >&2
	mkdir -p "$dir"
	(cd "$mod" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w $*" -o "$out.tmp" .)
	mv "$out.tmp" "$out"
}

major=${k8s_version#v}; major=${major%%.*}
minor=${k8s_version#v*.}; minor=${minor%%.*}
# -p 2 keeps the kube-apiserver link within memory on a 2-core, 24 GiB machine.
GOFLAGS="${GOFLAGS:-} -p=2" build kube-apiserver "$k8s_version" "$here/kube-apiserver" \
	"-X k8s.io/component-base/version.gitVersion=$k8s_version" \
	"-X k8s.io/component-base/version.gitMajor=$major" \
	"-X k8s.io/component-base/version.gitMinor=$minor" \
	"-X k8s.io/client-go/pkg/version.gitVersion=$k8s_version" \
	"-X k8s.io/client-go/pkg/version.gitMajor=$major" \
	"-X k8s.io/client-go/pkg/version.gitMinor=$minor"
build etcd "$etcd_version" "$here/etcd"
echo "$dir"
