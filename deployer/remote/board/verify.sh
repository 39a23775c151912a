# After an upload, on boards without python: sha256 of each temp file, mode set when it checks out.
# argv: (mode_octal tmp want_sha256)... -> per file "ok" or "bad <sha256|unreadable>"
h() { sha256sum < "$1" | cut -c1-64; }
while [ $# -gt 2 ]; do
    m=$1; t=$2; w=$3; shift 3
    g=$(h "$t" 2>/dev/null)
    if [ "$g" = "$w" ]; then chmod -- "$m" "$t" 2>/dev/null; echo ok; else echo "bad ${g:-unreadable}"; fi
done
