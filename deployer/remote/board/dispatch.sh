# Prologue put before a script's sh fallback: run the python version when the board has that
# python, else fall through to the sh code that follows. argv: py_code python args...
p=$1; q=$2; shift 2
if command -v "$q" >/dev/null 2>&1; then exec "$q" -c "$p" "$@"; fi
