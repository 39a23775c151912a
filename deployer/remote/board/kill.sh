# TERM a remote process group, KILL it if still alive after the grace period.
# argv: pgid pid tries (0.2 s each). `pid` is the fallback when the group cannot be signalled.
# Liveness ignores zombies: a container's pid 1 may never reap orphans.
g=$1; p=$2; n=$3
case $g$p$n in *[!0-9]*) echo "kill.sh: numbers only" >&2; exit 2;; esac
alive() { if command -v ps >/dev/null 2>&1; then ps -eo pgid=,stat= | grep -Eq "^ *$1 +[^Z]"; else kill -0 -"$1" 2>/dev/null; fi; }
kill -TERM -"$g" 2>/dev/null || { kill -TERM "$p" 2>/dev/null; exit 0; }
i=0
while [ $i -lt "$n" ]; do alive "$g" || exit 0; sleep 0.2; i=$((i+1)); done
kill -KILL -"$g" 2>/dev/null
exit 0
