# BASH_ENV for the tests: this machine's bash 5 made to refuse what bash 4.2 (CentOS 7; RHEL 8
# has 4.4) lacks at run time, so a rendered script that relies on it fails here as it would there.
# What cannot be refused at run time (${x@Q}, namerefs, empty arrays under set -u) is checked in
# the rendered text by tests/test_bash42.py.

# wait takes only job ids and pids in bash 4.2: -n came in 4.3, -f in 5.0, -p in 5.1.
wait() {
    local argument
    for argument in "$@"; do
        case "$argument" in
            -*) echo "wait: $argument: invalid option (bash 4.2 has none)" >&2; return 2 ;;
        esac
    done
    builtin wait "$@"
}

# Variables bash 5 added; unset, they are plain unset names, which set -u turns into errors.
unset EPOCHSECONDS EPOCHREALTIME SRANDOM BASH_ARGV0
