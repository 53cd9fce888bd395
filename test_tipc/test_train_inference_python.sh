#!/bin/bash
# TIPC chain: train a few iterations -> eval -> [pre_export] -> export -> [kl_quant] -> Paddle Inference
# -> compare.
#   bash test_tipc/prepare.sh <txt> lite_train_lite_infer
#   bash test_tipc/test_train_inference_python.sh <txt> lite_train_lite_infer
# <txt> is PaddleClas's positional key:value format (line numbers below are 0-based indices):
# train_infer_python.txt, or train_ptq_infer_python.txt for a post-training-quantised chain, whose
# kl_quant (line 34) quantises the export and whose infer_quant:True (line 39) says the inference
# model is int8 (on CPU its inference runs with precision int8; PaddleClas runs these in a separate
# test_ptq_inference_python.sh, in whole_infer mode only).
# Values may hold {run}, replaced by the training run's output folder, so a chain can point
# its eval/export/compare steps at files the run wrote (e.g. an extracted subnet's config).
# Results: test_tipc/output/<model_name>/<MODE>/results_python.log ("Run successfully/failed
# with command - ..." per step) and one log per step beside it (TIPC_OUTPUT=dir moves them).
set -f  # values such as [3,32,32] are not globs
FILENAME=${1:+$(readlink -m "$1")}  # before cd: a relative path means the caller's folder
MODE=$2
cd "$(dirname "$0")/.."
source test_tipc/common_func.sh
func_check_args test_tipc/test_train_inference_python.sh "$FILENAME" "$MODE"
mapfile -t lines < "$FILENAME"

# the format is positional: check the keys we read are where they must be
declare -A EXPECT=([0]="===========================train_params===========================" [1]=model_name
    [2]=python [3]=gpu_list [10]=train_model_name [13]="##" [14]=trainer [15]=norm_train [21]="##"
    [22]="===========================eval_params===========================" [23]=eval [25]="##"
    [26]="===========================infer_params===========================" [29]=norm_export
    [33]=kl_quant [34]=pre_export [38]=infer_quant [39]=inference [50]=compare)
if [ "${#lines[@]}" -lt 52 ]; then
    echo "error: $FILENAME has ${#lines[@]} lines; the train_infer_python format needs 52" >&2
    exit 2
fi
for i in "${!EXPECT[@]}"; do
    got=$(func_parser_key "${lines[$i]}")
    if [ "$got" != "${EXPECT[$i]}" ]; then
        echo "error: $FILENAME line $((i + 1)): expected key '${EXPECT[$i]}', got '${lines[$i]}'" >&2
        exit 2
    fi
done

model_name=$(func_parser_value "${lines[1]}")
python=$(func_parser_value "${lines[2]}")
gpu_list=$(func_parser_value "${lines[3]}")
device_key=$(func_parser_key "${lines[4]}")
amp_key=$(func_parser_key "${lines[5]}")
amp_list=$(func_parser_value "${lines[5]}")
iters_flag=$(func_parser_params "${lines[6]}" "$MODE")
output_key=$(func_parser_key "${lines[7]}")
bs_flag=$(func_parser_params "${lines[8]}" "$MODE")
pretrain_flag=$(func_set_params "$(func_parser_key "${lines[9]}")" "$(func_parser_value "${lines[9]}")")
train_model_name=$(func_parser_value "${lines[10]}")
trainer_list=$(func_parser_value "${lines[14]}")
eval_py=$(func_parser_value "${lines[23]}")
save_key=$(func_parser_key "${lines[27]}")
save_value=$(func_parser_value "${lines[27]}")
weights_key=$(func_parser_key "${lines[28]}")
weights_value=$(func_parser_value "${lines[28]}")
export_py=$(func_parser_value "${lines[29]}")
kl_quant_py=$(func_parser_value "${lines[33]}")
pre_export_py=$(func_parser_value "${lines[34]}")
infer_quant=$(func_parser_value "${lines[38]}")
if [ "$infer_quant" != "True" ] && [ "$infer_quant" != "False" ]; then
    echo "error: $FILENAME line 39: infer_quant must be True (the inference model is int8) or False, got '$infer_quant'" >&2
    exit 2
fi
inference_py=$(func_parser_value "${lines[39]}")
infer_device_key=$(func_parser_key "${lines[40]}")
infer_device_list=$(func_parser_value "${lines[40]}")
mkldnn_key=$(func_parser_key "${lines[41]}")
mkldnn_list=$(func_parser_value "${lines[41]}")
threads_key=$(func_parser_key "${lines[42]}")
threads_list=$(func_parser_value "${lines[42]}")
infer_bs_key=$(func_parser_key "${lines[43]}")
infer_bs_list=$(func_parser_value "${lines[43]}")
trt_key=$(func_parser_key "${lines[44]}")
trt_list=$(func_parser_value "${lines[44]}")
precision_key=$(func_parser_key "${lines[45]}")
precision_list=$(func_parser_value "${lines[45]}")
model_dir_key=$(func_parser_key "${lines[46]}")
model_dir_value=$(func_parser_value "${lines[46]}")
imgs_flag=$(func_set_params "$(func_parser_key "${lines[47]}")" "$(func_parser_value "${lines[47]}")")
features_key=$(func_parser_key "${lines[48]}")
compare_py=$(func_parser_value "${lines[50]}")

LOG_PATH="${TIPC_OUTPUT:-test_tipc/output}/${model_name}/${MODE}"
mkdir -p "$LOG_PATH"
status_log="${LOG_PATH}/results_python.log"
rm -f "$status_log"

# runs "$cmd" with its output in $2, then records the status line
function run_step() {
    local cmd=$1 log=$2
    eval "$cmd" > "$log" 2>&1
    local status=$?
    status_check $status "$cmd" "$status_log" "$model_name" "$log"
    return $status
}

function is_null() { [ -z "$1" ] || [ "$1" = "null" ]; }

# {run} -> the run folder
function at_run() { echo "${1//\{run\}/$2}"; }

function run_inference() {
    local run=$1 tag=$2 device=$3
    local model_dir
    model_dir=$(at_run "$model_dir_value" "$run")
    IFS='|' read -r -a mkldnns <<< "$mkldnn_list"
    IFS='|' read -r -a threads <<< "$threads_list"
    IFS='|' read -r -a bss <<< "$infer_bs_list"
    IFS='|' read -r -a trts <<< "$trt_list"
    IFS='|' read -r -a precisions <<< "$precision_list"
    # on CPU the precision is the model's: an int8 model (infer_quant) runs oneDNN's int8 kernels
    if [ "$device" = "cpu" ]; then
        trts=(False)
        if [ "$infer_quant" = "True" ]; then precisions=(int8); else precisions=(fp32); fi
    else
        mkldnns=(False); threads=(1)
    fi
    local mk th bs trt pr name feats cmd
    for mk in "${mkldnns[@]}"; do for th in "${threads[@]}"; do for bs in "${bss[@]}"; do
    for trt in "${trts[@]}"; do for pr in "${precisions[@]}"; do
        if [ "$device" != "cpu" ] && [ "$pr" != "fp32" ] && [ "$trt" != "True" ]; then continue; fi  # need TensorRT
        name="infer_${tag}_${device}_mkldnn_${mk}_threads_${th}_bs_${bs}_trt_${trt}_${pr}"
        feats="${LOG_PATH}/${name}.npz"
        cmd="${python} ${inference_py} ${infer_device_key}=${device} ${mkldnn_key}=${mk} ${threads_key}=${th}"
        cmd="${cmd} ${infer_bs_key}=${bs} ${trt_key}=${trt} ${precision_key}=${pr} ${model_dir_key}=${model_dir}"
        cmd="${cmd} ${imgs_flag} ${features_key}=${feats}"
        run_step "$cmd" "${LOG_PATH}/${name}.log" || continue
        if ! is_null "$compare_py"; then
            run_step "${python} $(at_run "$compare_py" "$run") --features ${feats}" \
                "${LOG_PATH}/compare_${name#infer_}.log"
        fi
    done; done; done; done; done
}

IFS='|' read -r -a gpus <<< "$gpu_list"
IFS='|' read -r -a amps <<< "$amp_list"
IFS='|' read -r -a trainers <<< "$trainer_list"
for gpu in "${gpus[@]}"; do
    if [ "$gpu" = "-1" ]; then
        device=cpu; launch=""
    else
        device=gpu; launch="-m paddle.distributed.launch --devices=${gpu}"
    fi
    for amp in "${amps[@]}"; do
        for trainer in "${trainers[@]}"; do
            train_py=$(func_parser_value "$(grep -m1 "^${trainer}:" "$FILENAME")")
            if is_null "$train_py"; then
                echo "error: $FILENAME: trainer '$trainer' has no command line" >&2
                exit 2
            fi
            tag="${trainer}_gpus_${gpu//,/-}_amp_${amp}"
            run="${LOG_PATH}/${tag}"
            rm -rf "$run"
            cmd="${python} ${launch} ${train_py} ${device_key}=${device} ${output_key}=${run}"
            cmd="${cmd} ${amp_key}=${amp} ${iters_flag} ${bs_flag} ${pretrain_flag}"
            run_step "$cmd" "${LOG_PATH}/train_${tag}.log" || continue
            if ! is_null "$eval_py"; then
                run_step "${python} $(at_run "$eval_py" "$run")" "${LOG_PATH}/eval_${tag}.log"
            fi
            if ! is_null "$pre_export_py"; then
                run_step "${python} $(at_run "$pre_export_py" "$run")" "${LOG_PATH}/pre_export_${tag}.log" || continue
            fi
            cmd="${python} $(at_run "$export_py" "$run") ${weights_key}=$(at_run "$weights_value" "$run")"
            cmd="${cmd} ${save_key}=$(at_run "$save_value" "$run")"
            run_step "$cmd" "${LOG_PATH}/export_${tag}.log" || continue
            if ! is_null "$kl_quant_py"; then
                run_step "${python} $(at_run "$kl_quant_py" "$run")" "${LOG_PATH}/kl_quant_${tag}.log" || continue
            fi
            IFS='|' read -r -a infer_devices <<< "$infer_device_list"
            for infer_device in "${infer_devices[@]}"; do
                if [ "$infer_device" != "$device" ] && [ "$infer_device" != "cpu" ]; then continue; fi
                run_inference "$run" "$tag" "$infer_device"
            done
        done
    done
done
failed=$(grep -c "^Run failed" "$status_log")
passed=$(grep -c "^Run successfully" "$status_log")
echo "TIPC ${model_name} ${MODE}: ${passed} steps succeeded, ${failed} failed (${status_log})"
[ "$failed" -eq 0 ]
