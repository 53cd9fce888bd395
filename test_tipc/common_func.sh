#!/bin/bash
# Helpers shared by the TIPC scripts (PaddleClas's test_tipc/common_func.sh conventions).

# "key:value" -> key / value (values never contain ':')
function func_parser_key() {
    local strs=$1
    echo "${strs%%:*}"
}

function func_parser_value() {
    local strs=$1
    if [[ "$strs" != *:* ]]; then echo ""; return; fi
    echo "${strs#*:}"
}

# "-o Global.x" "v" -> "-o Global.x=v"; nothing when the key or value is null or empty
function func_set_params() {
    local key=$1 value=$2
    if [ -z "$key" ] || [ "$key" = "null" ] || [ -z "$value" ] || [ "$value" = "null" ]; then
        echo ""
    else
        echo "${key}=${value}"
    fi
}

# "lite_train_lite_infer=4|whole_train_whole_infer=200" + MODE -> the value for MODE
# (a plain value without '=' applies to every mode)
function func_parser_params() {
    local strs=$1 mode=$2 item
    local key value
    key=$(func_parser_key "$strs")
    value=$(func_parser_value "$strs")
    IFS='|' read -r -a items <<< "$value"
    for item in "${items[@]}"; do
        if [[ "$item" != *=* ]]; then echo "${key}=${item}"; return; fi
        if [ "${item%%=*}" = "$mode" ]; then echo "${key}=${item#*=}"; return; fi
    done
    echo ""
}

# PaddleClas's status lines, which TIPC dashboards grep for
function status_check() {
    local last_status=$1 run_command=$2 run_log=$3 model_name=$4 log_path=$5
    if [ "$last_status" -eq 0 ]; then
        echo "Run successfully with command - ${model_name} - ${run_command} - ${log_path}" | tee -a "${run_log}"
    else
        echo "Run failed with command - ${model_name} - ${run_command} - ${log_path}" | tee -a "${run_log}"
    fi
}

# exits with the usage line unless $2 is a txt file and $3 a supported MODE
function func_check_args() {
    local script=$1 filename=$2 mode=$3
    local modes="lite_train_lite_infer whole_train_whole_infer"
    if [ ! -f "$filename" ] || [[ " $modes " != *" $mode "* ]]; then
        echo "usage: bash $script <train_infer_python.txt> <MODE>; MODE one of: $modes" >&2
        exit 2
    fi
}
