#!/usr/bin/env bash
# Mutation testing of the pure-Python core with mutmut (pinned in requirements-dev.txt). Not run in CI:
# each mutant re-runs the tests that cover it, so a group takes minutes on two cores.
#
#   scripts/mutation.sh                      # every group below
#   scripts/mutation.sh metrics calibration  # some groups
#   MUTATION_JOBS=2 scripts/mutation.sh      # more parallel test processes (default 1: the machine is shared)
#
# Each group mutates only the functions it names (wherever they live in cxr/, so module moves need no
# edit here) and runs only the fast test files that cover them. It runs in a throw-away copy of the working
# tree (nothing is written here) and prints killed / survived / timed out per group, then the survivors.
# Lines that only hold an error message's text are not mutated (MESSAGE_LINES): a message's wording is
# checked by the tests' `match=` patterns, and mutants of it are noise. See docs/mutation.md.
set -euo pipefail
cd "${MUTATION_ROOT:-$(dirname "$0")/..}"
ROOT=$(pwd)
JOBS=${MUTATION_JOBS:-1}
NICE=${MUTATION_NICE:-10}

# group | sample | functions (space-separated; Class.method for a method, module:function where several modules define
# the name) | test selection (pytest arguments). sample: empty = every mutant; digits = only the mutants whose
# number ends in one of them ("05": 1 in 5, "02468": 1 in 2), to keep a group's run to minutes on a shared
# machine (MUTATION_FULL=1 runs every mutant of every group).
GROUPS_TABLE='
metrics|05|confusion_counts confusion_matrix classification_report _divide wilson_interval _normal_quantile proportion _average_ranks roc_auc _auc_from_arrays bootstrap_auc_interval roc_curve _cumulative_counts precision_recall_curve average_precision binary_metrics _nan_to_none|tests/test_exact_metrics.py tests/test_evaluation.py
thresholds||choose_threshold _check_threshold|tests/test_exact_metrics.py tests/test_evaluation.py
calibration|02468|_as_labels _as_scores _check_same_length to_logits sigmoid apply_temperature check_temperature _negative_log_likelihood fit_temperature negative_log_likelihood brier_score reliability_curve expected_calibration_error|tests/test_calibration_edges.py tests/test_exact_metrics.py tests/test_evaluation.py
splits|02468|patient_id assign_splits leakage_report split_validation|tests/test_import_guards.py tests/test_validation_fraction.py tests/test_datasets.py -k "not cxr_train_validation and not command_line"
guards|05|_check_zip_entry _dicom_grayscale _voi_window _window_to_uint8 _first_number|tests/test_import_guards.py tests/test_dicom_synthetic.py tests/test_imaging.py
headers|05|check_size read_header _png_header _jpeg_header _bmp_header _tiff_header check_jpeg_complete _jpeg_first_scan check_png_complete|tests/test_imaging.py tests/test_raster_headers.py tests/test_tiff_headers.py
rows||PredictionResult.to_row|tests/test_result_rows.py tests/test_prediction_outputs.py -k "row or csv"
runs|02468|runs:_read_json runs:run_path runs:read_status runs:read_config runs:read_history runs:read_metrics runs:read_checkpoint_info runs:process_alive runs:_best runs:_nested runs:summarize_run model_files:read_metrics|tests/test_run_reading.py tests/test_runs.py tests/test_prediction_outputs.py -k "not csv and not external and not row"
'
# Regular expressions (Python's re) of lines holding only an error message: a `raise X(` line, or a line that is
# a single string literal (the continuation of a message).
MESSAGE_LINES=$(python -c 'import json; print(json.dumps([r"^\s*raise \w+\(", r"^\s*f?\"[^\"]*\"\s*\)*[,.]?\s*(#.*)?$", r"^\s*f?\x27[^\x27]*\x27\s*\)*[,.]?\s*(#.*)?$"]))')

wanted=("$@")
summary=()
while IFS='|' read -r group sample functions tests; do
    [ -n "${MUTATION_FULL:-}" ] && sample=""
    suffix='*'; [ -n "$sample" ] && suffix="*[$sample]"
    [ -z "$group" ] && continue
    if [ ${#wanted[@]} -gt 0 ] && [[ ! " ${wanted[*]} " == *" $group "* ]]; then continue; fi
    # The files that define the functions, and mutmut's names for them (module.x_function, module.xǁClassǁmethod).
    files=(); patterns=()
    for function in $functions; do
        if [[ $function == *:* ]]; then  # module:function where several modules define the name
            file="cxr/${function%%:*}.py"; function=${function#*:}
            [ -f "$file" ] || file=""
            name="x_${function}"
        elif [[ $function == *.* ]]; then
            class=${function%%.*}; method=${function#*.}
            file=$(grep -l -E "^class ${class}\b" cxr/*.py | head -1 || true)
            name="xǁ${class}ǁ${method}"
        else
            file=$(grep -l -E "^def ${function}\(" cxr/*.py | head -1 || true)
            name="x_${function}"
        fi
        if [ -z "$file" ]; then echo "mutation.sh: no definition of $function in cxr/; skipped" >&2; continue; fi
        module=$(echo "${file%.py}" | tr / .)
        files+=("$file"); patterns+=("${module}.${name}__mutmut_${suffix}")
    done
    [ ${#patterns[@]} -eq 0 ] && continue
    work=$(mktemp -d "${TMPDIR:-/tmp}/cxr-mutation-${group}-XXXX")
    git ls-files -co --exclude-standard -z | grep -zv '^models/' | xargs -0 cp --parents -t "$work" 2>/dev/null || true
    cp -r models "$work/" 2>/dev/null || true
    only=$(printf '"%s", ' $(printf '%s\n' "${files[@]}" | sort -u)); only="[${only%, }]"
    selection=$(python - "$tests" <<'PY'
import json, shlex, sys
print(json.dumps(shlex.split(sys.argv[1])))
PY
)
    cat >> "$work/pyproject.toml" <<EOF

[tool.mutmut]
source_paths = ["cxr"]
only_mutate = $only
also_copy = ["tests", "benchmarks", "models", "pyproject.toml", "pages", "app_components.py", "app_layout.py", "app_deployment.py", "app_train_settings.py", "streamlit_app.py"]
pytest_add_cli_args_test_selection = $selection
pytest_add_cli_args = ["-p", "no:cacheprovider", "-W", "ignore", "-x", "-q"]
do_not_mutate_patterns = $MESSAGE_LINES
EOF
    echo "== $group: ${functions}" >&2
    (cd "$work" && CXR_HOME="$work/cxr-home" TF_CPP_MIN_LOG_LEVEL=3 timeout "${MUTATION_TIMEOUT:-3000}" \
        nice -n "$NICE" python -m mutmut run --max-children "$JOBS" "${patterns[@]}" > "$work/run.log" 2>&1) || \
        echo "mutation.sh: mutmut stopped early for $group (see $work/run.log)" >&2
    prefixes=$(printf '%s\n' "${patterns[@]}" | sed 's/__mutmut_.*/__mutmut_/')
    results=$(cd "$work" && python -m mutmut results --all true 2>/dev/null | grep -F "$prefixes" | grep -v ': not checked$' \
        | grep -E "__mutmut_[0-9]*${sample:+[$sample]}: " || true)
    killed=$(grep -c ': killed$' <<<"$results" || true)
    survived=$(grep -c ': survived$' <<<"$results" || true)
    timeout_count=$(grep -c ': timeout$' <<<"$results" || true)
    untested=$(grep -c ': no tests$' <<<"$results" || true)  # no selected test runs the function: a survivor
    survived=$((survived + untested))
    other=$(grep -v -c -E ': (killed|survived|timeout|no tests)$' <<<"$results" || true)
    total=$((killed + survived + timeout_count))
    score=$(python -c "print(f'{100 * ($killed + $timeout_count) / $total:.1f}' if $total else 'n/a')")
    line=$(printf '%-12s %-9s killed %4d  timed out %3d  survived %4d  other %3d  score %s %%' \
        "$group" "${sample:+1 in $((10 / ${#sample}))}" "$killed" "$timeout_count" "$survived" "$other" "$score")
    summary+=("$line"); echo "$line" >&2
    grep -E ': survived$' <<<"$results" | sed "s/^ */    $group survivor: /" >&2 || true
    echo "   (mutants and logs kept in $work; \`cd $work && python -m mutmut show NAME\` shows one)" >&2
done <<<"$GROUPS_TABLE"
echo
echo "mutmut $(python -c 'import importlib.metadata as m; print(m.version("mutmut"))'): score = (killed + timed out) / mutants run"
printf '%s\n' "${summary[@]}"
