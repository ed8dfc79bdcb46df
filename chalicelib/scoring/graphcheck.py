"""Checking an uploaded SavedModel's graphs against the op allow-list, before anything loads it.

The check reads the protobuf only: no `tf.saved_model.load`, no function is traced or called.
It visits every node of every meta graph and every function of the function library (nested
calls, control-flow bodies and gradient functions are library functions too), so an op
cannot hide in a function that only some path calls.

Most ops are simply allowed or not (`op_allowlist`). A few are allowed only where the
loader's own protocol runs them, which needs to know *who runs what*, and that depends on the
loader: `tf.saved_model.load` takes the TF2 path (the object graph's functions, called with
the captures it binds) for a file with one meta graph that has an object graph, and the TF1
path (the graph itself, pruned per signature) otherwise.
- each graph node and function gets the contexts it can run in: `init` (the init op, or
  anything a collection names, which covers the TF1 loader's fallback init; the one step into
  which the TF1 loader feeds asset paths), `exec` (a signature or, for TF2 exports,
  any function the object graph names anywhere: the loader makes each one callable, so a
  function also reached from the init op or the saver is still run by callers), `restore` (the saver's
  restore op, fed the variables' path), `save` (the saver's save tensor, which no loader
  runs), or `unused`;
- the input that names a file is traced back through pass-through ops and function arguments
  (to every call site the loader in use runs, and to the captures TF2 binds), to prove it is
  one of the model's assets, bound or fed where the reader runs, or the saver's filename.
A source that cannot be proven (a constant, the caller's data, a variable, a loop, anything
else) is refused: the burden of proof is on the model. Attributes are checked too: no tensor
in an attribute may be a resource or variant (a forged handle to another model's state).
"""
from __future__ import annotations

import contextlib
from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from google.protobuf import message
from tensorflow.core.framework import types_pb2, variable_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from chalicelib.scoring import op_allowlist as allow

INIT, EXEC, RESTORE, SAVE, UNUSED = "init", "exec", "restore", "save", "unused"
ASSET, ASSET_TENSOR, SAVER_FILENAME, OTHER = "asset", "asset tensor", "saver filename", "other"
_DIRECT_CALLS = {"PartitionedCall", "StatefulPartitionedCall"}  # arguments map to inputs one to one
_INIT_SIGNATURE = "__saved_model_init_op"
_LEGACY_ASSETS = "saved_model_assets"
_HANDLE_TYPES = {types_pb2.DT_RESOURCE, types_pb2.DT_VARIANT, types_pb2.DT_RESOURCE_REF, types_pb2.DT_VARIANT_REF}
_MAX_LISTED = 20


class RefusedModel(ValueError):
    """The SavedModel uses ops a served model may not run; the message lists them."""


@dataclass(frozen=True, order=True)
class Refusal:
    op: str
    where: str
    why: str

    def __str__(self) -> str:
        return f"{self.op} ({self.where}: {self.why})"


def check(proto, assets_dir: Path) -> None:
    """Raise RefusedModel naming every refused op and where it sits; return if all is allowed.

    `proto` is the parsed saved_model_pb2.SavedModel; `assets_dir` the model's `assets/`."""
    refusals: set[Refusal] = set()
    tf2 = len(proto.meta_graphs) == 1 and proto.meta_graphs[0].HasField("object_graph_def")  # as TF decides
    for meta_graph in proto.meta_graphs:
        refusals |= _MetaGraph(meta_graph, assets_dir, tf2=tf2).refusals()
    if refusals:
        listed = sorted(refusals)
        more = f"; and {len(listed) - _MAX_LISTED} more" if len(listed) > _MAX_LISTED else ""
        raise RefusedModel(
            "The model uses operations a served model may not run: "
            + "; ".join(map(str, listed[:_MAX_LISTED])) + more
            + ". A model may compute on its inputs, variables and assets only: no files, network, "
              "printing, Python calls or shared state (see the README's security model)."
        )


def _node_name(ref: str) -> str:
    """'^name', 'name:1' and, inside functions, 'name:output:0' all name the node 'name'."""
    return ref.lstrip("^").split(":", 1)[0]


class _MetaGraph:
    """One meta graph's nodes, functions, call sites and contexts, read once."""

    def __init__(self, meta_graph, assets_dir: Path, *, tf2: bool):
        self.meta_graph = meta_graph
        self.assets_dir = assets_dir
        self.tf2 = tf2
        graph = meta_graph.graph_def
        self.nodes = {node.name: node for node in graph.node}
        self.functions = {function.signature.name: function for function in graph.library.function}
        self.function_nodes = {name: {node.name: node for node in function.node_def}
                               for name, function in self.functions.items()}
        self.arguments = {name: [arg.name for arg in function.signature.input_arg]
                          for name, function in self.functions.items()}
        self.gradients = {gradient.function_name: gradient.gradient_func for gradient in graph.library.gradient}
        self.problems: set[Refusal] = set()
        self.callers: dict[str, list[tuple[str | None, object]]] = defaultdict(list)
        for node in graph.node:
            self._index(None, node)
        for name, function in self.functions.items():
            for node in function.node_def:
                self._index(name, node)
        self.asset_tensors, self.asset_objects = self._assets()
        self.object_functions = self._object_functions()
        saver = meta_graph.saver_def
        self.saver_filename = saver.filename_tensor_name if saver.filename_tensor_name else None
        self.contexts = self._contexts()

    # --- what calls what -------------------------------------------------------------------

    def _calls(self, scope: str | None, node) -> list[str]:
        """The library functions a node runs (by op name or function-valued attributes, nested
        ones included)."""
        called = [node.op] if node.op in self.functions else []
        for key, name in _function_names(node.attr):
            if name in self.functions:
                called.append(name)
            else:
                self.problems.add(Refusal(node.op, _where(scope, node),
                                          f"attribute '{key}' names function '{name}', which the model "
                                          "does not define"))
        return called

    def _index(self, scope: str | None, node) -> None:
        for name in self._calls(scope, node):
            self.callers[name].append((scope, node))

    def _successors(self, unit: tuple[str, str]) -> list[tuple[str, str]]:
        kind, name = unit
        if kind == "node":
            node = self.nodes[name]
            inputs = [("node", _node_name(ref)) for ref in node.input if _node_name(ref) in self.nodes]
            return inputs + [("function", called) for called in self._calls(None, node)]
        found = [("function", called) for node in self.functions[name].node_def
                 for called in self._calls(name, node)]
        if name in self.gradients and self.gradients[name] in self.functions:
            found.append(("function", self.gradients[name]))
        return found

    def _roots(self) -> dict[str, list[tuple[str, str]]]:
        init_roots, graph_roots = self._collection_nodes(), []
        for key, signature in self.meta_graph.signature_def.items():
            for info in [*signature.inputs.values(), *signature.outputs.values()]:
                (init_roots if key == _INIT_SIGNATURE else graph_roots).append(_node_name(info.name))
        saver = self.meta_graph.saver_def
        return {
            INIT: [("node", name) for name in init_roots if name in self.nodes],
            EXEC: [("node", name) for name in graph_roots if name in self.nodes]
            + [("function", name) for name in self.object_functions if name in self.functions],
            RESTORE: [("node", _node_name(saver.restore_op_name))] if saver.restore_op_name else [],
            SAVE: [("node", _node_name(saver.save_tensor_name))] if saver.save_tensor_name else [],
        }

    def _object_functions(self) -> set[str]:
        """Every function the TF2 object graph names: its concrete-function table, and each
        object that refers to one (a bare function: a resource's initializer, a signature; a
        tf.function's traces). The TF2 loader makes each of them callable, with the captures
        the table binds, whatever else in the graph also calls it; so each counts as run by the
        caller (`exec`), and one named without its table entry (captures nobody declared) is
        refused."""
        graph = self.meta_graph.object_graph_def
        table = set(graph.concrete_functions)
        named: set[str] = set()
        for node_id, obj in enumerate(graph.nodes):
            kind = obj.WhichOneof("kind")
            names = ([obj.bare_concrete_function.concrete_function_name] if kind == "bare_concrete_function"
                     else list(obj.function.concrete_functions) if kind == "function" else [])
            for name in names:
                named.add(name)
                if name not in table or name not in self.functions:
                    self._refuse("object graph", f"object {node_id}",
                                 f"it names function {name!r} without the concrete-function entry that declares "
                                 "what the loader binds to it")
        return table | named

    def _collection_nodes(self) -> list[str]:
        """Every node a collection names, as init roots. A TF1 graph that declares no init op
        gets the loader's fallback, which runs the table initializers and the local variables'
        initializers listed in collections (with asset paths fed); rather than model which
        collections a loader may run, all of them count: then no save or restore op may sit
        behind any, and an asset read there is fed."""
        names = []
        for collection in self.meta_graph.collection_def.values():
            names += [_node_name(ref) for ref in collection.node_list.value]
            for raw in collection.bytes_list.value:  # VariableDefs: their initializer and snapshot ops
                variable = variable_pb2.VariableDef()
                with contextlib.suppress(message.DecodeError):
                    variable.ParseFromString(raw)
                    names += [_node_name(ref) for ref in (variable.initializer_name, variable.snapshot_name) if ref]
        return [name for name in names if name in self.nodes]

    def _contexts(self) -> dict[tuple[str, str], set[str]]:
        contexts: dict[tuple[str, str], set[str]] = defaultdict(set)
        for context, roots in self._roots().items():
            queue = deque(unit for unit in roots if unit[0] == "function" or unit[1] in self.nodes)
            while queue:
                unit = queue.popleft()
                if context in contexts[unit]:
                    continue
                contexts[unit].add(context)
                queue.extend(self._successors(unit))
        return contexts

    # --- the check -------------------------------------------------------------------------

    def refusals(self) -> set[Refusal]:
        for node in self.nodes.values():
            self._check(None, node, self.contexts.get(("node", node.name)) or {UNUSED})
        for name, function in self.functions.items():
            contexts = self.contexts.get(("function", name)) or {UNUSED}
            for node in function.node_def:
                self._check(name, node, contexts)
        return self.problems

    def _check(self, scope: str | None, node, contexts: set[str]) -> None:
        op = node.op
        where = _where(scope, node)
        self._check_attributes(op, where, node)
        if op in allow.ALLOWED or op in self.functions:
            return
        if op in allow.ASSET_READERS:
            sources = self._input_sources(scope, node, allow.ASSET_READERS[op])
            if not sources <= {ASSET, ASSET_TENSOR}:
                self._refuse(op, where, "its file is not one of the model's own assets")
            elif ASSET_TENSOR in sources and not contexts <= {INIT}:
                self._refuse(op, where, "it reads an asset outside the init op, where the loader does not "
                                        "give the asset's path")
        elif op in allow.RESTORE_OPS:
            if contexts != {RESTORE}:
                self._refuse(op, where, "it reads checkpoint files outside the loader's variable restore")
            elif self._input_sources(scope, node, allow.RESTORE_OPS[op]) != {SAVER_FILENAME}:
                self._refuse(op, where, "its checkpoint path is not the one the loader gives")
        elif op in allow.SAVE_OPS:
            if contexts != {SAVE}:
                self._refuse(op, where, "it writes files, outside the saver's save function")
        else:
            self._refuse(op, where, "not on the allow-list")

    def _refuse(self, op: str, where: str, why: str) -> None:
        self.problems.add(Refusal(op, where, why))

    def _check_attributes(self, op: str, where: str, node) -> None:
        for key, value in _attributes(node.attr):
            if value.HasField("tensor") and value.tensor.dtype in _HANDLE_TYPES:
                self._refuse(op, where, f"attribute '{key}' holds a resource or variant tensor, which could "
                                        "name another model's state")
            if op in allow.DESERIALIZERS or op == "Const":
                types = [value.type] if value.HasField("type") else list(value.list.type)
                if _HANDLE_TYPES.intersection(types):
                    self._refuse(op, where, f"attribute '{key}' makes it decode bytes into a resource or variant")
                if value.placeholder:
                    self._refuse(op, where, f"attribute '{key}' is left for a caller to bind, so it is not checked")
        if op == "Empty" and not node.attr["init"].b:
            self._refuse(op, where, "without init=true it returns uninitialised memory")

    # --- where a filename comes from ---------------------------------------------------------

    def _input_sources(self, scope: str | None, node, index: int) -> set[str]:
        data_inputs = [ref for ref in node.input if not ref.startswith("^")]
        if index >= len(data_inputs):
            return {OTHER}
        return self._sources(scope, data_inputs[index], frozenset())

    def _sources(self, scope: str | None, ref: str, seen: frozenset) -> set[str]:
        name = _node_name(ref)
        if (scope, name) in seen:
            return {OTHER}  # a loop proves nothing
        seen = seen | {(scope, name)}
        if scope is None:
            tensor = ref if ":" in ref else f"{ref}:0"
            if tensor in self.asset_tensors:
                return {ASSET_TENSOR}
            if tensor == self.saver_filename:
                return {SAVER_FILENAME}
            node = self.nodes.get(name)
        else:
            if name in self.arguments[scope] and ":" not in ref:
                return self._argument_sources(scope, self.arguments[scope].index(name), seen)
            node = self.function_nodes[scope].get(name)
        if node is not None and node.op in allow.PASS_THROUGH and node.input:
            return self._sources(scope, node.input[0], seen)
        return {OTHER}

    def _argument_sources(self, function: str, index: int, seen: frozenset) -> set[str]:
        """What a function's argument can be bound to: at every call site in the graphs, and,
        for a function the restored TF2 object exposes, the capture TF2 binds (or, for its
        regular arguments, whatever its caller passes)."""
        found: set[str] = set()
        exposed = self.meta_graph.object_graph_def.concrete_functions.get(function)
        for scope, node in self.callers[function]:
            if scope is None and self.tf2 and exposed is not None:
                continue  # the TF2 loader calls it with the captures it binds, never from the graph's nodes
            data_inputs = [ref for ref in node.input if not ref.startswith("^")]
            direct = node.op == function or (node.op in _DIRECT_CALLS and node.attr["f"].func.name == function)
            if not direct or index >= len(data_inputs):
                found.add(OTHER)  # control-flow bodies and odd calls: not mapped, so not proven
                continue
            found |= self._sources(scope, data_inputs[index], seen)
        if exposed is not None:
            bound = list(exposed.bound_inputs)
            regular = len(self.arguments[function]) - len(bound)
            captured = regular >= 0 and index >= regular
            found.add(ASSET if captured and bound[index - regular] in self.asset_objects else OTHER)
        return found or {OTHER}

    # --- assets --------------------------------------------------------------------------------

    def _assets(self) -> tuple[set[str], set[int]]:
        """The asset tensors (TF1) and asset objects (TF2) whose files are the model's own; an
        asset whose file name leaves `assets/` or is missing is refused outright."""
        files = list(self.meta_graph.asset_file_def) or self._legacy_assets()  # the loader reads one or the other
        good_files = set()
        for index, asset in enumerate(files):
            name = asset.filename
            path = PurePosixPath(name)
            if not name or path.name != name or name in {".", ".."} or "\\" in name:
                self._refuse("asset", f"asset {name!r}", "its file name must be a plain name inside assets/")
            elif not (self.assets_dir / name).is_file() or (self.assets_dir / name).is_symlink():
                self._refuse("asset", f"asset {name!r}", "the file is not in the model's assets/ folder")
            else:
                good_files.add(index)
        tensors = {files[index].tensor_info.name for index in good_files}
        objects = set()
        for node_id, obj in enumerate(self.meta_graph.object_graph_def.nodes):
            if obj.WhichOneof("kind") == "asset":
                if obj.asset.asset_file_def_index in good_files:
                    objects.add(node_id)
                elif obj.asset.asset_file_def_index >= len(files):
                    self._refuse("asset", f"object {node_id}", "it names an asset the model does not declare")
        return tensors, objects


    def _legacy_assets(self) -> list:
        """TF1 builders may record assets in the 'saved_model_assets' collection instead, as the
        loader still accepts."""
        collection = self.meta_graph.collection_def.get(_LEGACY_ASSETS)
        found = []
        for packed in collection.any_list.value if collection is not None else []:
            asset = meta_graph_pb2.AssetFileDef()
            if packed.Unpack(asset):
                found.append(asset)
        return found


def _attributes(attrs, prefix: str = ""):
    """(name, AttrValue) of a node's attributes and of those bound in its function attributes."""
    for key, value in attrs.items():
        yield prefix + key, value
        for func in ([value.func] if value.HasField("func") else list(value.list.func)):
            yield from _attributes(func.attr, f"{prefix}{key}.")


def _function_names(attrs, prefix: str = "") -> list[tuple[str, str]]:
    """(attribute, function name) of every function an attribute map names, at any depth."""
    found = []
    for key, value in attrs.items():
        for func in ([value.func] if value.HasField("func") else list(value.list.func)):
            if func.name:
                found.append((prefix + key, func.name))
            found += _function_names(func.attr, f"{prefix}{key}.")
    return found


def _where(scope: str | None, node) -> str:
    return f"in function {scope}" if scope else f"in the graph, node {node.name!r}"
