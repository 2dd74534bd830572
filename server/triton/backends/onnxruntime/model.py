"""A Python-based Triton backend named ``onnxruntime``.

Triton loads ``<backend-directory>/onnxruntime/model.py`` for every model whose config says
``backend: "onnxruntime"`` when no ``libtriton_onnxruntime.so`` is there (the PyPI wheel of
Triton ships none). It serves the same ``config.pbtxt`` that NVIDIA's container serves with its
native ONNX Runtime backend:

- ``<model_repository>/<version>/<default_model_filename or model.onnx>`` is the model;
- ``max_batch_size`` > 0: the requests Triton's dynamic batcher hands over in one ``execute``
  call are concatenated on the batch axis, run once and split back, outputs in config order;
- ``instance_group`` is honoured by Triton itself (one stub process per instance);
- parameters ``intra_op_thread_count``, ``inter_op_thread_count`` and ``execution_mode``
  (``0`` sequential, ``1`` parallel) as in NVIDIA's backend; ``0`` means onnxruntime's default;
- request cancellation: a request Triton reports cancelled (its gRPC caller went away or its
  deadline passed) gets a ``CANCELLED`` error instead of being computed, checked before running
  and between the slices of the fault-injection delay below;
- fault injection for tests, like Triton's own QA models: parameter ``execute_delay_ms``
  (``string_value``, default ``0``) sleeps that long in every ``execute`` call, in slices of at
  most 10 ms, before running the model. It stops early when every request in the call was
  cancelled;
- execution providers as NVIDIA's backend picks them (`choose_providers`): an instance Triton
  put on a GPU gets TensorRT (when the config names the ``tensorrt`` accelerator, its
  parameters translated as NVIDIA's backend does), then CUDA, then the CPU; any other instance
  the CPU. Providers this onnxruntime lacks (the CPU-only wheel, or onnxruntime-gpu without
  TensorRT's libraries) are left out with a warning in Triton's log, so a GPU config still
  serves where only the CPU can. Triton itself refuses ``KIND_GPU`` where it sees no GPU;
  ``KIND_AUTO`` configs load there as CPU instances (``attnserve.export.repository``).

This file runs inside the stub's own environment (numpy < 2, onnxruntime), never imports
attnserve, and must stay self-contained: Triton's backend folder holds this one file. Its
provider choice is plain functions, so tests and tools/gpu_check.py load the file by path
without Triton.
"""

import json
import os
import time

import numpy as np
import onnxruntime as ort

try:
    import triton_python_backend_utils as pb_utils
except ModuleNotFoundError:  # loaded outside Triton for `choose_providers` (tests, tools/gpu_check.py)
    pb_utils = None

CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"
TENSORRT_PROVIDER = "TensorrtExecutionProvider"

# NVIDIA's onnxruntime backend: how the TensorRT accelerator's parameters in config.pbtxt become
# TensorRT execution provider options (keys starting with ``trt_`` pass through unchanged).
_TENSORRT_PRECISION_OPTION = {"FP16": "trt_fp16_enable", "BF16": "trt_bf16_enable", "INT8": "trt_int8_enable"}
_TENSORRT_RENAMED = {
    "max_workspace_size_bytes": "trt_max_workspace_size",
    "int8_calibration_table_name": "trt_int8_calibration_table_name",
    "int8_use_native_calibration_table": "trt_int8_use_native_calibration_table",
}

_TRITON_TO_NUMPY = {
    "TYPE_FP32": np.float32,
    "TYPE_FP16": np.float16,
    "TYPE_FP64": np.float64,
    "TYPE_INT64": np.int64,
    "TYPE_INT32": np.int32,
    "TYPE_INT8": np.int8,
    "TYPE_UINT8": np.uint8,
    "TYPE_BOOL": np.bool_,
}

_DELAY_SLICE_S = 0.010  # how late a cancellation is noticed during the injected delay


def _parameter(config, key, default):
    value = config.get("parameters", {}).get(key, {}).get("string_value", "")
    return value if value != "" else default


def choose_providers(config, instance_kind, device_id, available):
    """The execution providers for one model instance, best first, and warnings for the log.

    Args:
        config: the model config as Triton hands it over (its JSON form, parsed).
        instance_kind: where Triton placed the instance (``args["model_instance_kind"]``:
            ``"GPU"`` or ``"CPU"``).
        device_id: the instance's GPU (``args["model_instance_device_id"]``).
        available: ``onnxruntime.get_available_providers()``.

    Returns:
        ``([(provider, options), ...], [warning, ...])``; the CPU provider always comes last.

    Raises:
        ValueError: the config names an accelerator or a TensorRT parameter NVIDIA's backend
            would refuse (it fails the load there, so it fails here too).
    """
    gpu_accelerators = (
        config.get("optimization", {}).get("execution_accelerators", {}).get("gpu_execution_accelerator", [])
    )
    if instance_kind != "GPU":  # NVIDIA's backend reads the GPU accelerators for GPU instances only
        gpu_kinds = {"KIND_GPU", "KIND_AUTO"}
        configured = [a.get("name", "") for a in gpu_accelerators] or [
            "cuda" for group in config.get("instance_group", []) if group.get("kind") in gpu_kinds
        ][:1]
        warnings = [
            f"configured for the GPU ({', '.join(configured)}) but Triton placed this instance on the "
            f"{instance_kind or 'CPU'} (it sees no GPU): serving on {CPU_PROVIDER}"
        ]
        return [(CPU_PROVIDER, {})], warnings if configured else []

    wanted = []
    for accelerator in gpu_accelerators:
        name = accelerator.get("name", "")
        parameters = accelerator.get("parameters", {})
        if name == "tensorrt":
            wanted.append((TENSORRT_PROVIDER, _tensorrt_options(parameters, device_id)))
        elif name == "cuda":
            wanted.append((CUDA_PROVIDER, {**parameters, "device_id": str(device_id)}))
        else:
            raise ValueError(f"unknown GPU execution accelerator {name!r} (known: tensorrt, cuda)")
    if not any(provider == CUDA_PROVIDER for provider, _ in wanted):
        wanted.append((CUDA_PROVIDER, {"device_id": str(device_id)}))  # NVIDIA's backend always adds it

    chosen = [(provider, options) for provider, options in wanted if provider in available]
    install_hint = "install onnxruntime-gpu in the backend's environment"
    warnings = [
        f"{provider} is not in this onnxruntime (it has {', '.join(available)}): "
        + (install_hint if provider == CUDA_PROVIDER else "left out")
        for provider, _ in wanted
        if provider not in available
    ]
    if not chosen:
        warnings.append(f"no GPU execution provider here: serving on {CPU_PROVIDER}")
    return [*chosen, (CPU_PROVIDER, {})], warnings


def _tensorrt_options(parameters, device_id):
    options = {"device_id": str(device_id)}
    for key, value in parameters.items():
        if key == "precision_mode":
            if value not in ("FP32", *_TENSORRT_PRECISION_OPTION):
                raise ValueError(f"unsupported TensorRT precision_mode {value!r} (FP32, FP16, BF16, INT8)")
            if value != "FP32":
                options[_TENSORRT_PRECISION_OPTION[value]] = "1"
        elif key in _TENSORRT_RENAMED:
            options[_TENSORRT_RENAMED[key]] = value
        elif key.startswith("trt_"):
            options[key] = value
        else:
            raise ValueError(f"unknown parameter {key!r} for the TensorRT execution accelerator")
    return options


def _log(level, message):
    logger = getattr(pb_utils, "Logger", None)  # Triton 23.04 on; older stubs print to the log
    if logger is None:
        print(message, flush=True)
    elif level == "warn":
        logger.log_warn(message)
    else:
        logger.log_info(message)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.model_name = args["model_name"]
        filename = config.get("default_model_filename") or "model.onnx"
        path = os.path.join(args["model_repository"], args["model_version"], filename)
        if not os.path.isfile(path):
            raise pb_utils.TritonModelException(f"{self.model_name}: no model file at {path}")

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(_parameter(config, "intra_op_thread_count", "0"))
        options.inter_op_num_threads = int(_parameter(config, "inter_op_thread_count", "0"))
        if _parameter(config, "execution_mode", "0") == "1":
            options.execution_mode = ort.ExecutionMode.ORT_PARALLEL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            providers, warnings = choose_providers(
                config,
                args.get("model_instance_kind", "CPU"),
                int(args.get("model_instance_device_id", "0") or 0),
                ort.get_available_providers(),
            )
        except ValueError as exc:
            raise pb_utils.TritonModelException(f"{self.model_name}: {exc}") from None
        for warning in warnings:
            _log("warn", f"{self.model_name}: {warning}")
        self.session = ort.InferenceSession(path, options, providers=providers)
        # onnxruntime falls back to the CPU when a GPU provider fails to start (no device, a
        # missing CUDA or TensorRT library): say which ones it actually took
        running = self.session.get_providers()
        if running[0] != providers[0][0]:
            started = ", ".join(running)
            _log("warn", f"{self.model_name}: {providers[0][0]} did not start; running on {started}")
        _log("info", f"{self.model_name}: execution providers {', '.join(running)}")

        self.execute_delay_s = float(_parameter(config, "execute_delay_ms", "0")) / 1e3
        self.max_batch_size = int(config.get("max_batch_size", 0))
        self.inputs = [(i["name"], _TRITON_TO_NUMPY[i["data_type"]]) for i in config["input"]]
        self.outputs = [o["name"] for o in config["output"]]
        graph_inputs = {i.name for i in self.session.get_inputs()}
        graph_outputs = {o.name for o in self.session.get_outputs()}
        missing = [n for n, _ in self.inputs if n not in graph_inputs]
        missing += [n for n in self.outputs if n not in graph_outputs]
        if missing:
            raise pb_utils.TritonModelException(
                f"{self.model_name}: config names {missing} that {filename} does not have; "
                f"graph inputs {sorted(graph_inputs)}, outputs {sorted(graph_outputs)}"
            )

    def execute(self, requests):
        if self.execute_delay_s > 0:
            self._delay(requests)
        cancelled = [_is_cancelled(request) for request in requests]
        live = [request for request, gone in zip(requests, cancelled, strict=True) if not gone]
        answers = iter(self._run(live) if live else [])
        return [_cancelled_response() if gone else next(answers) for gone in cancelled]

    def _delay(self, requests):
        end = time.monotonic() + self.execute_delay_s
        while (left := end - time.monotonic()) > 0:
            if all(_is_cancelled(request) for request in requests):
                return
            time.sleep(min(left, _DELAY_SLICE_S))

    def _run(self, requests):
        try:
            feeds = [self._feeds(request) for request in requests]
        except ValueError as exc:
            error = pb_utils.TritonError(str(exc))
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
        wanted = self._requested_outputs(requests)
        if self.max_batch_size > 0 and len(requests) > 1 and self._concatenable(feeds):
            sizes = [len(next(iter(feed.values()))) for feed in feeds]
            batch = {name: np.concatenate([feed[name] for feed in feeds]) for name in feeds[0]}
            results = self.session.run(wanted, batch)
            bounds = np.cumsum([0, *sizes])
            per_request = [
                [result[bounds[i] : bounds[i + 1]] for result in results] for i in range(len(requests))
            ]
        else:
            per_request = [self.session.run(wanted, feed) for feed in feeds]
        return [
            pb_utils.InferenceResponse(
                output_tensors=[
                    pb_utils.Tensor(name, np.ascontiguousarray(value))
                    for name, value in zip(wanted, values, strict=True)
                ]
            )
            for values in per_request
        ]

    def _feeds(self, request):
        feed = {}
        for name, dtype in self.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                raise ValueError(f"{self.model_name}: input {name!r} is missing")
            array = tensor.as_numpy()
            if array.dtype != dtype:
                raise ValueError(
                    f"{self.model_name}: input {name!r} is {array.dtype}, expected {np.dtype(dtype)}"
                )
            feed[name] = array
        return feed

    def _requested_outputs(self, requests):
        wanted = set()
        for request in requests:
            names = request.requested_output_names()
            wanted.update(names if names else self.outputs)
        return [name for name in self.outputs if name in wanted]

    @staticmethod
    def _concatenable(feeds):
        first = feeds[0]
        return all(feed[name].shape[1:] == first[name].shape[1:] for feed in feeds[1:] for name in first)

    def finalize(self):
        self.session = None


def _is_cancelled(request):
    # `is_cancelled` arrived with Triton 23.10 (2.39); older stubs cannot tell
    return hasattr(request, "is_cancelled") and request.is_cancelled()


def _cancelled_response():
    code = getattr(pb_utils.TritonError, "CANCELLED", None)  # error codes: Triton 23.10 too
    error = pb_utils.TritonError("request cancelled", *([] if code is None else [code]))
    return pb_utils.InferenceResponse(error=error)
