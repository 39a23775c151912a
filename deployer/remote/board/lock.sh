# Board lock (deployer.remote.lock), in sh + flock(1) (util-linux, busybox): no python start-up,
# which costs seconds on small or emulated boards. Boards without flock(1) run lock.py instead.
# argv: py_code python lockfile wait_s lease_s holder_json sweep_age_s folder...
# stdout: "waiting <holder>" (while waiting), then "locked <n swept>"; or "busy <holder>" (exit 75),
#         "error <reason>" (exit 1). The lock is released on stdin EOF (the SSH channel closed) or
#         after lease_s seconds without a heartbeat byte (a dead link the board's sshd has not noticed).
#         Under the lock, temp files of dead uploads/unpacks older than sweep_age_s are removed.
p=$1; q=$2; shift 2
if ! command -v flock >/dev/null 2>&1; then
    if command -v "$q" >/dev/null 2>&1; then exec "$q" -c "$p" "$@"; fi
    echo "error the board has neither flock(1) nor $q"
    exit 1
fi
f=$1; w=$2; lease=$3; info=$4; age=$5; shift 5
case $f in */*) d=${f%/*};; *) d=.;; esac
mkdir -p -- "${d:-/}" 2>/dev/null
# `command`: a failed redirection on plain `exec` ends sh at once (rc 2, no answer for the host);
# a runtime folder that is a file reads as "Directory nonexistent" there, so it is named here
[ -d "${d:-/}" ] || { echo "error ${d:-/} is not a folder (a file is in the way)"; exit 1; }
command exec 9>>"$f" || { echo "error cannot open $f"; exit 1; }
holder() { h=$(head -n 1 -- "$f" 2>/dev/null); [ -n "$h" ] || h='{}'; }
if ! flock -n 9; then
    holder
    case $w in 0|0.0) echo "busy $h"; exit 75;; esac
    echo "waiting $h"
    flock -w "$w" 9 || { holder; echo "busy $h"; exit 75; }
fi
: > "$f"
printf '%s, "board_pid": %s}\n' "${info%\}}" "$$" >> "$f"
mins=$(( (${age%.*} + 59) / 60 ))
n=0
for x in "$@"; do
    [ -d "$x" ] || continue
    k=$(find "$x" -mindepth 1 -maxdepth 1 -name '.*' \( -name '*.part-*' -o -name '*.tmp-*' -o -name '*.old-*' \) \
        -mmin +"$mins" -print -exec rm -rf {} + 2>/dev/null 9>&- | wc -l)
    n=$((n + k))
done
echo "locked $n"
case $lease in 0|0.0|"") lease=;; esac
if [ -n "$lease" ] && command -v timeout >/dev/null 2>&1; then
    while :; do
        c=$(timeout "$lease" head -c 1 2>/dev/null 9>&-) || break
        [ -n "$c" ] || break
    done
else
    cat > /dev/null 9>&-
fi
: > "$f"
