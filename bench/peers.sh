#!/usr/bin/env bash
# Installs the benchmark's peers (root): QEMU from this release's backports (qemu-storage-daemon, qemu-nbd,
# qemu-img), xmount and nbdfuse (libnbd-bin), fio, postmark, gnuplot. The backports source is derived from the
# machine's own Debian apt source (same mirror and keyring, suite CODENAME-backports), so no mirror is named here.
set -euo pipefail
[[ $(id -u) == 0 ]] || { echo "bench/peers.sh: must run as root" >&2; exit 1; }
. /etc/os-release
codename=${VERSION_CODENAME:?no VERSION_CODENAME in /etc/os-release}
list=/etc/apt/sources.list.d/fvd-bench-backports.sources
if ! grep -rqs "${codename}-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    src=/etc/apt/sources.list.d/debian.sources
    [[ -r $src ]] || { echo "bench/peers.sh: no $src to derive the backports source from; add ${codename}-backports by hand" >&2; exit 1; }
    # The stanza that carries the release itself (Suites: CODENAME ...), not the security one.
    awk -v rel="$codename" -v out="$list" '
        BEGIN { RS = ""; FS = "\n" }
        {
            uris = ""; key = ""; main = 0
            for (i = 1; i <= NF; i++) {
                if ($i ~ /^URIs:/) uris = $i
                else if ($i ~ /^Signed-By:/) key = $i
                else if ($i ~ /^Suites:/) { n = split(substr($i, 8), s, " "); for (j = 1; j <= n; j++) if (s[j] == rel) main = 1 }
            }
            if (main && uris != "") {
                printf "Types: deb\n%s\nSuites: %s-backports\nComponents: main\n%s\n", uris, rel, key > out
                found = 1; exit
            }
        }
        END { if (!found) exit 1 }' "$src" || { echo "bench/peers.sh: no '$codename' stanza in $src" >&2; exit 1; }
    echo "bench/peers.sh: added $list (from $src)"
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends -t "${codename}-backports" qemu-utils qemu-system-common >/dev/null
apt-get install -y -qq --no-install-recommends xmount libnbd-bin fio postmark strace gnuplot-nox >/dev/null
echo "peers: $(qemu-storage-daemon --version | head -1); $(qemu-nbd --version | head -1); $(xmount --version 2>&1 | grep -m1 -i xmount); nbdfuse $(nbdfuse --version 2>&1 | head -1)"
