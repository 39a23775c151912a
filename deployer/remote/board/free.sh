# Free bytes for the login user in a folder (after a write failed: was the disk full?). argv: folder
df -Pk -- "$1" 2>/dev/null | awk 'NR==2 {printf "%.0f\n", $4 * 1024}'
