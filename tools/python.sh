#!/usr/bin/env bash
# The Python that builds and runs the project's venv, for the Makefile: prints its path, or one
# line on stderr saying what is wrong and what to do, and exits 1.
#
#   PYTHON=<name or path, or empty> tools/python.sh [VENV]      (VENV default: .venv)
#   tools/python.sh --supported                                 (prints "3.13 3.12 3.11")
#
# Supported versions: those pyproject.toml's requires-python allows (">=3.A,<3.B").
# - VENV exists: it is used as it is if its Python is supported and, when PYTHON is given, of the
#   same version as PYTHON; otherwise the line names what it is and how to get past it.
# - PYTHON given: it must run and be a supported version.
# - Else the newest supported python3.X on PATH that runs (a pyenv shim of a version that is not
#   active is on PATH but does not run), else python3 if it is supported.
# PYTHON_ORIGIN (make's $(origin PYTHON): "command line", "environment") only goes into messages.
# Runs nothing but bash builtins and the interpreters it asks (the tests give it a PATH of those).
set -u

here=${BASH_SOURCE[0]%/*}
[[ $here == "${BASH_SOURCE[0]}" ]] && here=.
venv=${1:-.venv}
given=${PYTHON:-}
origin=${PYTHON_ORIGIN:-}
[[ $origin == "command line" || $origin == environment* ]] || origin=""

fail() {
    printf 'error: %s\n' "$1" >&2
    exit 1
}

# Supported minor versions from pyproject.toml, newest first.
lo="" hi=""
re='^requires-python *= *">= *3\.([0-9]+) *, *< *3\.([0-9]+)"'
while IFS= read -r line || [[ -n $line ]]; do
    if [[ $line =~ $re ]]; then
        lo=${BASH_REMATCH[1]} hi=${BASH_REMATCH[2]}
    fi
done <"$here/../pyproject.toml"
[[ -n $lo && $hi -gt $lo ]] ||
    fail "tools/python.sh reads requires-python in pyproject.toml as \">=3.A,<3.B\"; it is not"
supported=()
for ((m = hi - 1; m >= lo; m--)); do supported+=("3.$m"); done
words=""  # "3.11, 3.12 or 3.13"
for ((i = ${#supported[@]} - 1; i >= 0; i--)); do
    if [[ -z $words ]]; then
        words=${supported[i]}
    elif ((i == 0)); then
        words+=" or ${supported[i]}"
    else
        words+=", ${supported[i]}"
    fi
done

if [[ $venv == --supported ]]; then
    echo "${supported[*]}"
    exit 0
fi

is_supported() {
    local v
    for v in "${supported[@]}"; do [[ $v == "$1" ]] && return 0; done
    return 1
}

# ask INTERPRETER: sets version ("3.12") and exe (its path); on failure sets why (one line).
ask() {
    local code='import sys; print("%d.%d" % sys.version_info[:2], sys.executable)' out
    local answer='^3\.[0-9]+ '  # "3.12 /path/to/python"
    version="" exe="" why=""
    if [[ $1 != */* ]] && ! command -v "$1" >/dev/null; then
        why="is not on PATH"
        return 1
    fi
    if ! out=$("$1" -c "$code" 2>/dev/null </dev/null) || [[ ! $out =~ $answer ]]; then
        out=$("$1" -c "$code" 2>&1 </dev/null)
        out=${out%%$'\n'*}
        why="does not run${out:+ ($out)}"
        return 1
    fi
    version=${out%% *} exe=${out#* }
    [[ -n $exe ]] || exe=$1
}

# A supported interpreter under pyenv, to name in a message (pyenv root without running pyenv).
example() {
    local root=${PYENV_ROOT:-${HOME:-}/.pyenv} v p
    for v in "${supported[@]}"; do
        for p in "$root"/versions/"$v".*/bin/python; do
            [[ -x $p ]] && { echo "$p"; return; }
        done
    done
    echo '$(pyenv root)/versions/3.12.1/bin/python'
}

what="PYTHON=$given${origin:+ (from the $origin)}"
if [[ -n $given ]]; then
    ask "$given" || fail "$what $why; point PYTHON= at a Python $words, e.g. PYTHON=$(example)"
    is_supported "$version" ||
        fail "$what is Python $version; this project runs on Python $words: point PYTHON= at one, e.g. PYTHON=$(example)"
    want=$version chosen=$exe
fi

if [[ -e $venv/bin/python || -L $venv/bin/python ]]; then
    ask "$venv/bin/python" ||
        fail "$venv/bin/python $why (was the Python it was built with removed?): rm -rf $venv, then make install again"
    is_supported "$version" ||
        fail "$venv was built with Python $version; this project runs on Python $words: rm -rf $venv, then make install again (PYTHON= picks the interpreter)"
    if [[ -n $given && $version != "$want" ]]; then
        fail "$venv was built with Python $version but $what is $want: rm -rf $venv to rebuild it with $want, leave PYTHON= out to keep it, or give it another venv: VENV=.venv-$want"
    fi
    echo "$venv/bin/python"
    exit 0
fi

if [[ -n $given ]]; then
    echo "$chosen"
    exit 0
fi

seen=()
for v in "${supported[@]}" ""; do
    name=python${v:-3}
    if ask "$name"; then
        if is_supported "$version"; then
            echo "$exe"
            exit 0
        fi
        seen+=("$name is $version")
    elif [[ $why != "is not on PATH" ]]; then
        seen+=("$name does not run")
    fi
done
found=""
for s in "${seen[@]}"; do found+="${found:+, }$s"; done
fail "no supported Python on PATH: this project runs on Python $words (tried python${supported[0]}..python${supported[${#supported[@]} - 1]}, python3${found:+: $found}); install one, or point PYTHON= at one, e.g. make install PYTHON=$(example)"
