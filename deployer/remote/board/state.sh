# Before an upload: what the board already has (see state.py for the output). argv: py_code python
# (final partial_prefix)... Fresh pushes have nothing to hash: answered here in sh, skipping the
# python start-up (seconds on small or emulated boards); otherwise python if the board has it,
# else sh + sha256sum.
p=$1; q=$2; shift 2
h() { sha256sum < "$1" | cut -c1-64; }
found=
i=0
for x in "$@"; do
    i=$((i+1))
    if [ $((i % 2)) -eq 1 ]; then
        [ -e "$x" ] && found=1
    else
        for y in "$x"*; do [ -e "$y" ] && found=1; break; done
    fi
    [ -n "$found" ] && break
done
if [ -n "$found" ] && command -v "$q" >/dev/null 2>&1; then exec "$q" -c "$p" "$@"; fi
tab=$(printf '\t')
while [ $# -gt 1 ]; do
    f=$1; x=$2; shift 2
    case $f in */*) d=${f%/*};; *) d=.;; esac
    [ -n "$d" ] || d=/
    [ -d "$d" ] || mkdir -p -- "$d" || { echo "error cannot create $d"; exit 1; }
    if [ -f "$f" ]; then a=$(h "$f"); else a=-; fi
    bp=-; bs=-1
    if [ -n "$found" ]; then
        for y in "$x"*; do
            [ -f "$y" ] || continue
            s=$(wc -c < "$y")
            if [ "$s" -gt "$bs" ]; then bs=$s; bp=$y; fi
        done
    fi
    if [ "$bp" != - ]; then c=$(h "$bp"); bp=${bp##*/}; else bs=-; c=-; fi
    fr=$(df -Pk -- "$d" 2>/dev/null | awk 'NR==2 {printf "%.0f", $4 * 1024}')
    dv=$(stat -c %d -- "$d" 2>/dev/null)
    echo "${a:--}$tab$bp$tab$bs$tab${c:--}$tab${fr:--}$tab${dv:--}"
done
