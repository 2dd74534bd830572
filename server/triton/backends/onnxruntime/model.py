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
  cancelled.

This file runs inside the stub's own environment (numpy < 2, onnxruntime), never imports
attnserve, and must stay self-contained.
"""

import json
import os
import time

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

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
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

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
