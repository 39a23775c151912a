#!/bin/sh
# deployer's board-side release store. POSIX sh + coreutils/busybox only (no Python needed), so it
# works on any board that has an sshd. The host sends this file as the `sh -c` script of one SSH
# exec, with every argument quoted (deployer/fleet/boardcmd.py):
#
#   sh -c "$(cat fleet.sh)" fleet session ROOT WAIT HOLDER [LEASE]  # lock ROOT, serve commands on stdin
#   sh -c "$(cat fleet.sh)" fleet list ROOT all|current     # read-only: releases, manifests, health
#
# Layout under ROOT (the board's `<runtime_dir>/fleet`, see deployer/remote/layout.py):
#   blobs/<sha256>            verified file contents, stored once (read-only)
#   incoming/<sha256>.part    uploads in progress; a re-run resumes from their size
#   releases/<id>/            an immutable release: hard links into blobs/ + manifest.json
#   current -> releases/<id>  switched by rename(2) of a fresh symlink, never `ln -sf`
#   history                   "<epoch> <id>" per switch, oldest first (rollback order, GC keep list)
#   state/health-<id>.json    the last health check of each release (written by the host)
#   .deployer.lock            the board lock (flock), held for a whole deploy; its first line says who
#
# Protocol of `session`: one command per stdin line, one answer line starting with `ok` or `err`
# (`state` answers several lines ending in `end`; `beat` is the host's heartbeat and `lease SECONDS`
# starts the lease if LEASE was not given; neither gets an answer).
# stdin EOF (the SSH channel closed) ends the session and releases the lock. A link that dies without
# the board noticing (its sshd can keep such a session for hours) is the lease's job, with the same
# semantics as deployer.remote.lock: after LEASE seconds without a line from an idle session's host
# the session ends and the lock is free. Every step is atomic on its own, so any cut leaves a whole
# old or whole new release current.
set -u
umask 022
LOCK=.deployer.lock   # deployer.remote.layout.LOCK_NAME (shared with push/run)

say() { printf '%s\n' "$*"; }

valid_id() {   # release ids: [A-Za-z0-9._-], not starting with '.' or '-', at most 96 characters
    case $1 in ''|.*|-*|*[!A-Za-z0-9._-]*) return 1 ;; esac
    [ ${#1} -le 96 ]
}
valid_name() { # file names inside a release: no '/', no leading '.' or '-', no shell metacharacters
    case $1 in ''|.*|-*|*[!A-Za-z0-9._+-]*) return 1 ;; esac
    [ ${#1} -le 128 ]
}
valid_sha() {
    case $1 in *[!0-9a-f]*) return 1 ;; esac
    [ ${#1} -eq 64 ]
}
valid_uint() {
    case $1 in ''|*[!0-9]*) return 1 ;; esac
    return 0
}

hash_file() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum < "$1" | cut -c1-64
    elif command -v openssl >/dev/null 2>&1; then
        openssl dgst -sha256 -r < "$1" | cut -c1-64
    else
        python3 -c 'import hashlib,sys;print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$1"
    fi
}

# fsync named files/folders (coreutils >= 8.24, busybox); a whole-system sync where unsupported
fsync() { sync -- "$@" 2>/dev/null || sync; }

# rename(2) of $1 over $2, also when $2 is a symlink to a folder (plain mv would move INTO it)
rename_over() {
    mv -Tf -- "$1" "$2" 2>/dev/null && return 0
    python3 -c 'import os,sys; os.replace(sys.argv[1], sys.argv[2])' "$1" "$2" 2>/dev/null && return 0
    busybox mv -Tf "$1" "$2" 2>/dev/null && return 0
    return 1
}

one_line() {   # a small JSON file's lines joined, by the shell alone (the host wrote it on one line)
    j=
    while IFS= read -r l || [ -n "$l" ]; do j="$j$l"; done < "$1"
    printf '%s' "$j"
}

current_id() {
    t=$(readlink current 2>/dev/null) || return 0
    say "${t#releases/}"
}

read_current() { # sets $cur: the current release id ('' if none), read once per session (a session holds
    # the board lock, and only lock holders switch `current`; every process start counts on a small board)
    [ -n "${cur_known-}" ] && return 0
    cur=$(current_id); cur_known=1
}

# no awk anywhere in this file: images without it exist (Debian's awk is an alternatives link that
# an unpacked sysroot lacks), and a missing keep list must never read as "keep nothing"
free_kb() { df -Pk . 2>/dev/null | { read -r _ && read -r _ _ _ avail _ && say "$avail"; }; }

nlinks() {     # hard-link count of a file
    stat -c %h -- "$1" 2>/dev/null && return 0
    # shellcheck disable=SC2046  # the words of ls -ld are the point
    set -- $(ls -ld -- "$1" 2>/dev/null)
    say "${2:-2}"
}

keepers() {    # keepers CURRENT N: the N newest distinct release ids in history other than CURRENT
    [ -f history ] || return 0
    rev=                                  # the history newest first, without a process (tac/sed)
    while IFS= read -r line; do rev="$line
$rev"; done < history
    k=0; seen=" "
    while [ "$k" -lt "$2" ] && read -r _ kid; do
        [ -n "$kid" ] && [ "$kid" != "$1" ] || continue
        case $seen in *" $kid "*) continue ;; esac
        seen="$seen$kid "; say "$kid"; k=$((k + 1))
    done <<EOF
$rev
EOF
}

# --- session commands -------------------------------------------------------------------------

do_state() {   # state ID SHA... -> current, release have|none, blob lines, free, end
    id=$1; shift
    valid_id "$id" || { say "err bad release id"; return; }
    read_current; say "current ${cur:--}"
    have=
    if [ -f "releases/$id/manifest.json" ]; then have=1; say "release have"; else say "release none"; fi
    for s in "$@"; do
        valid_sha "$s" || { say "blob $s bad"; continue; }
        if [ -f "blobs/$s" ]; then
            say "blob $s have"
        elif [ -f "incoming/$s.part" ]; then
            say "blob $s part $(wc -c < "incoming/$s.part" | tr -d ' ')"
        else
            say "blob $s none"
        fi
    done
    if [ -n "$have" ]; then say "free -"; else say "free $(free_kb)"; fi   # only an upload needs it
    say "end"
}

hash_parts() { # hash_parts FILE...: "<sha256>  FILE" per line, one process where sha256sum exists
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum -- "$@" 2>/dev/null
    else
        for f in "$@"; do say "$(hash_file "$f")  $f"; done
    fi
}

place_blobs() { # place_blobs SHA...: verify every incoming/SHA.part not yet in blobs/ and move it there
    # One sha256sum, chmod and sync for all of them: on a small board (or under qemu) every process
    # start costs more than hashing a model. Prints an err line and returns 1 on the first failure.
    todo= parts=
    for s in "$@"; do
        [ -f "blobs/$s" ] && continue
        case " $todo " in *" $s "*) continue ;; esac
        [ -f "incoming/$s.part" ] || { say "err missing $s"; return 1; }
        todo="$todo $s" parts="$parts incoming/$s.part"
    done
    [ -n "$todo" ] || return 0
    # shellcheck disable=SC2086  # the words are validated sha256 hex names
    sums=$(hash_parts $parts)
    good=
    while read -r got path; do
        [ -n "$path" ] || continue
        s=${path#incoming/}; s=${s%.part}
        if [ "$got" != "$s" ]; then
            rm -f -- "$path"
            say "err corrupt $s ${got:-unreadable}"
            return 1
        fi
        good="$good $s"
    done <<EOF
$sums
EOF
    for s in $todo; do
        case "$good " in *" $s "*) ;; *) rm -f -- "incoming/$s.part"; say "err corrupt $s unreadable"; return 1 ;; esac
    done
    # shellcheck disable=SC2086
    chmod 444 $parts && fsync $parts || { say "err cannot store blobs"; return 1; }
    for s in $todo; do
        mv -f -- "incoming/$s.part" "blobs/$s" || { say "err cannot store blob $s"; return 1; }
    done
    return 0
}

do_commit() {  # commit ID MANIFEST_SHA NAME=SHA... -> ok | err
    id=$1; msha=$2; shift 2
    valid_id "$id" || { say "err bad release id"; return; }
    valid_sha "$msha" || { say "err bad manifest sha"; return; }
    if [ -f "releases/$id/manifest.json" ]; then say "ok exists"; return; fi
    for pair in "$@"; do
        name=${pair%%=*}; sha=${pair#*=}
        valid_name "$name" || { say "err bad file name"; return; }
        valid_sha "$sha" || { say "err bad sha for $name"; return; }
        [ "$name" != manifest.json ] || { say "err reserved name manifest.json"; return; }
    done
    shas=$msha
    for pair in "$@"; do shas="$shas ${pair#*=}"; done
    # shellcheck disable=SC2086  # validated sha256 words
    place_blobs $shas || return
    fsync blobs
    tmp="releases/.tmp-$id-$$"
    [ ! -e "$tmp" ] || rm -rf -- "$tmp"
    if ! mkdir -- "$tmp"; then say "err cannot create $tmp (disk full?)"; return; fi
    for pair in "$@" "manifest.json=$msha"; do
        name=${pair%%=*}; sha=${pair#*=}
        if ! { ln -- "blobs/$sha" "$tmp/$name" 2>/dev/null || cp -- "blobs/$sha" "$tmp/$name"; }; then
            rm -rf -- "$tmp"
            say "err cannot link $name (disk full?)"
            return
        fi
    done
    fsync "$tmp"/* "$tmp"
    if ! mv -- "$tmp" "releases/$id"; then rm -rf -- "$tmp"; say "err cannot rename release $id"; return; fi
    fsync releases
    say "ok"
}

do_switch() {  # switch ID -> ok PREVIOUS | err
    id=$1
    valid_id "$id" || { say "err bad release id"; return; }
    [ -f "releases/$id/manifest.json" ] || { say "err no release $id on this board"; return; }
    read_current; prev=$cur
    t=".current.tmp-$$"
    if [ -e "$t" ] || [ -L "$t" ]; then rm -f -- "$t"; fi
    ln -s "releases/$id" "$t" || { say "err cannot create symlink (disk full?)"; return; }
    if ! rename_over "$t" current; then rm -f -- "$t"; cur_known=; say "err cannot rename over current"; return; fi
    cur=$id
    fsync .
    say "$(date +%s) $id" >> history
    say "ok ${prev:--}"
}

do_gc() {      # gc KEEP [PROTECTED_ID...] -> ok releases=N blobs=M
    keep=$1; shift
    valid_uint "$keep" || { say "err bad keep count"; return; }
    read_current
    keep_ids=$(keepers "$cur" "$keep")
    removed=0
    for d in releases/* releases/.tmp-*; do
        [ -d "$d" ] || continue
        id=${d#releases/}
        [ "$id" = "$cur" ] && continue
        skip=
        for k in $keep_ids "$@"; do [ "$k" = "$id" ] && skip=1; done
        [ -n "$skip" ] && continue
        rm -rf -- "$d" && removed=$((removed + 1))
    done
    blobs=0 orphans=
    set -- blobs/*
    if [ -f "$1" ] && links=$(stat -c '%h %n' -- "$@" 2>/dev/null) && [ -n "$links" ]; then
        while read -r n b; do        # one stat for every blob (GNU and busybox stat both take -c)
            if [ "${n:-2}" -le 1 ]; then orphans="$orphans $b"; blobs=$((blobs + 1)); fi
        done <<EOF
$links
EOF
    else
        for b in "$@"; do
            [ -f "$b" ] || continue
            if [ "$(nlinks "$b")" -le 1 ]; then orphans="$orphans $b"; blobs=$((blobs + 1)); fi
        done
    fi
    # shellcheck disable=SC2086  # blob names are sha256 hex
    [ -z "$orphans" ] || rm -f -- $orphans
    for p in incoming/*.part; do
        [ -f "$p" ] || continue
        s=${p#incoming/}; s=${s%.part}
        [ -f "blobs/$s" ] && rm -f -- "$p"
    done
    lines=0
    if [ -f history ]; then while IFS= read -r _; do lines=$((lines + 1)); done < history; fi
    if [ "$lines" -gt 200 ]; then
        tail -n 100 history > .history.tmp && rename_over .history.tmp history
    fi
    fsync . releases blobs
    say "ok releases=$removed blobs=$blobs"
}

do_note() {    # note ID JSON... -> ok (state/health-ID.json, written atomically)
    id=$1
    valid_id "$id" || { say "err bad release id"; return; }
    t="state/.health-$id.tmp-$$"
    if printf '%s\n' "$2" > "$t" && fsync "$t" && rename_over "$t" "state/health-$id.json"; then
        say "ok"
    else
        rm -f -- "$t"; say "err cannot write health note (disk full?)"
    fi
}

take_lock() {  # take_lock WAIT HOLDER_JSON: flock(1) on fd 9, the same lock deployer.remote.lock takes
    command -v flock >/dev/null 2>&1 || { say "err the board has no flock(1) (util-linux or busybox)"; exit 2; }
    exec 9>>"$LOCK" || { say "err cannot open $LOCK"; exit 2; }
    if ! flock -n 9; then
        say "waiting $(head -n 1 -- "$LOCK" 2>/dev/null)"
        flock -w "$1" 9 || { say "busy $(head -n 1 -- "$LOCK" 2>/dev/null)"; exit 75; }
    fi
    : > "$LOCK"
    printf '%s, "board_pid": %s}\n' "${2%\}}" "$$" >> "$LOCK"
}

lease_watch() { # lease_watch LEASE: end this session after LEASE s with no line from its host while idle
    # Builtins only but `sleep` (a no-op deploy of hundreds of boards feels every process start). The
    # session writes "<n> busy" before and "<n> idle" after each line it reads; a changed mark is life.
    # The session ends this watcher with SIGTERM: its `sleep` goes too (it used to be orphaned and ran
    # on for up to lease/3 s after every fleet command); a trapped signal interrupts `wait` at once.
    tick=$(( $1 / 3 )); [ "$tick" -ge 1 ] || tick=1
    idle=0 seen= nap=
    trap 'kill "$nap" 2>/dev/null; exit 0' TERM
    while sleep "$tick" & nap=$!; wait "$nap"; do
        kill -0 "$$" 2>/dev/null || exit 0                # the session is over
        mark=; read -r mark < "$BEAT" 2>/dev/null
        if [ "$mark" != "$seen" ] || [ "${mark#* }" = busy ]; then
            seen=$mark idle=0; continue
        fi
        idle=$((idle + tick))
        if [ "$idle" -ge "$1" ]; then
            kill "$$" 2>/dev/null                         # the kernel drops the flock with the shell
            exit 0
        fi
    done
}

start_lease() { # start_lease LEASE_S: from now on, LEASE_S s of silence from an idle host end the session
    # (also a command: the host starts it after a no-op check, which then costs no process start)
    [ "$1" -gt 0 ] && [ -z "$watcher" ] || return 0
    # no lock fd, no channel pipes: neither the flock nor the SSH channel may outlive the session
    # (exec in a subshell: a redirection on a command would keep saved copies of them open)
    ( exec 9>&- < /dev/null > /dev/null 2>&1; lease_watch "$1" ) &
    watcher=$!
}

session() {    # session ROOT WAIT HOLDER_JSON [LEASE_S]
    valid_uint "$2" || { say "err bad wait"; exit 2; }
    lease=${4:-0}
    valid_uint "$lease" || { say "err bad lease"; exit 2; }
    # builtin tests first: a no-op deploy of a large fleet feels every process start on every board
    { [ -d "$1" ] || mkdir -p -- "$1"; } && cd -- "$1" || { say "err cannot enter $1"; exit 2; }
    [ -d blobs ] && [ -d incoming ] && [ -d releases ] && [ -d state ] || mkdir -p blobs incoming releases state ||
        { say "err cannot create folders in $1 (disk full?)"; exit 2; }
    take_lock "$2" "$3"
    BEAT=state/.lease watcher= n=0      # one name: only the lock holder writes it
    start_lease "$lease"
    say "locked"
    while { [ -z "$watcher" ] || echo "$n idle" > "$BEAT"; } && IFS= read -r line; do
        n=$((n + 1))
        [ -z "$watcher" ] || echo "$n busy" > "$BEAT"
        set -f
        # shellcheck disable=SC2086  # word splitting is the point; every word is validated
        set -- $line
        set +f
        [ $# -gt 0 ] || continue
        cmd=$1; shift
        case $cmd:$# in
            state:0) say "err usage" ;;
            state:*) do_state "$@" ;;
            commit:0|commit:1) say "err usage" ;;
            commit:*) do_commit "$@" ;;
            switch:1) do_switch "$1" ;;
            gc:0) say "err usage" ;;
            gc:*) do_gc "$@" ;;
            note:0|note:1) say "err usage" ;;
            note:*) rest=${line#*" "}; do_note "$1" "${rest#*" "}" ;;
            beat:*) ;;
            lease:1) if valid_uint "$1"; then start_lease "$1"; else say "err bad lease"; fi ;;
            quit:*) break ;;
            *) say "err unknown command" ;;
        esac
    done
    [ -z "$watcher" ] || kill "$watcher" 2>/dev/null
    : > "$LOCK"
}

list() {       # list ROOT all|current: read-only, no lock (every pointer it reads is switched atomically)
    if ! cd -- "$1" 2>/dev/null; then say "current -"; say "free -"; say "end"; return; fi
    cur=$(current_id)
    say "current ${cur:--}"
    say "free $(free_kb)"
    for d in releases/*; do
        [ -f "$d/manifest.json" ] || continue
        id=${d#releases/}
        if [ "$2" = all ]; then
            say "release $id $(stat -c %Y -- "$d" 2>/dev/null || echo 0) $(du -sk -- "$d" | cut -f1)"
        else
            [ "$id" = "$cur" ] || continue
            say "release $id 0 0"          # `status` needs no age or size: no process for them
        fi
        say "manifest $id $(one_line "$d/manifest.json")"
        if [ -f "state/health-$id.json" ]; then say "health $id $(one_line "state/health-$id.json")"; fi
    done
    if [ "$2" = all ] && [ -f history ]; then tail -n 20 history | sed 's/^/history /'; fi
    say "end"
}

mode=${1-}
[ $# -gt 0 ] && shift
case $mode in
    session) [ $# -eq 3 ] || [ $# -eq 4 ] || { say "err usage: session ROOT WAIT HOLDER_JSON [LEASE]"; exit 2; }
             session "$@" ;;
    list) [ $# -eq 2 ] || { say "err usage: list ROOT all|current"; exit 2; }; list "$@" ;;
    *) say "err usage: fleet session|list ..."; exit 2 ;;
esac
