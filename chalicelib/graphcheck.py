"""Checking an uploaded SavedModel's graphs against the op allow-list, before anything loads it.

The check reads the protobuf only: no `tf.saved_model.load`, no function is traced or called.
It visits every node of every meta graph and every function of the function library (nested
calls, control-flow bodies and gradient functions are library functions too), so an op
cannot hide in a function that only some path calls.

Most ops are simply allowed or not (`op_allowlist`). A few are allowed only where the
loader's own protocol runs them, which needs to know *who runs what*:
- each graph node and function gets the contexts it can run in: `exec` (reachable from a
  signature, an init op, a collection the TF1 loader runs, or, for TF2 exports, any function
  the restored object exposes), `restore` (the saver's restore op), `save` (the saver's save
  tensor, which no loader runs), or `unused`;
- the input that names a file is traced back through pass-through ops, function arguments (to
  every call site, and to the captures TF2 binds) and asset-path variables, to prove it is
  one of the model's assets or the saver's filename tensor, which the loader feeds.
A source that cannot be proven (a constant, the caller's data, a loop, anything else) is
refused: the burden of proof is on the model.
"""
from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from chalicelib import op_allowlist as allow

EXEC, RESTORE, SAVE, UNUSED = "exec", "restore", "save", "unused"
ASSET, SAVER_FILENAME, OTHER = "asset", "saver filename", "other"
_DIRECT_CALLS = {"PartitionedCall", "StatefulPartitionedCall"}  # arguments map to inputs one to one
_VARIABLE_USES = {"ReadVariableOp", "AssignVariableOp", "VarIsInitializedOp", "VariableShape"}
_MAX_LISTED = 20
_LEGACY_ASSETS = "saved_model_assets"


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
    for meta_graph in proto.meta_graphs:
        refusals |= _MetaGraph(meta_graph, assets_dir).refusals()
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

    def __init__(self, meta_graph, assets_dir: Path):
        self.meta_graph = meta_graph
        self.assets_dir = assets_dir
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
        self.consumers: dict[str, list[object]] = defaultdict(list)
        for node in graph.node:
            self._index(None, node)
            for ref in node.input:
                self.consumers[_node_name(ref)].append(node)
        for name, function in self.functions.items():
            for node in function.node_def:
                self._index(name, node)
        self.asset_tensors, self.asset_objects = self._assets()
        saver = meta_graph.saver_def
        self.saver_filename = saver.filename_tensor_name if saver.filename_tensor_name else None
        self.contexts = self._contexts()

    # --- what calls what -------------------------------------------------------------------

    def _calls(self, scope: str | None, node) -> list[str]:
        """The library functions a node runs (by op name or function-valued attributes)."""
        called = [node.op] if node.op in self.functions else []
        for key, value in node.attr.items():
            names = [value.func.name] if value.func.name else [func.name for func in value.list.func]
            for name in names:
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
        graph_roots = []
        for signature in self.meta_graph.signature_def.values():
            for info in [*signature.inputs.values(), *signature.outputs.values()]:
                graph_roots.append(_node_name(info.name))
        for collection in self.meta_graph.collection_def.values():  # main_op, legacy_init_op, ...
            graph_roots += [_node_name(ref) for ref in collection.node_list.value]
        saver = self.meta_graph.saver_def
        exposed = list(self.meta_graph.object_graph_def.concrete_functions)  # TF2: callable after load
        return {
            EXEC: [("node", name) for name in graph_roots if name in self.nodes]
            + [("function", name) for name in exposed if name in self.functions],
            RESTORE: [("node", _node_name(saver.restore_op_name))] if saver.restore_op_name else [],
            SAVE: [("node", _node_name(saver.save_tensor_name))] if saver.save_tensor_name else [],
        }

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
        if op in allow.ALLOWED or op in self.functions:
            return
        where = _where(scope, node)
        if op in allow.ASSET_READERS:
            sources = self._input_sources(scope, node, allow.ASSET_READERS[op])
            if sources != {ASSET}:
                self._refuse(op, where, "its file is not one of the model's own assets")
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
                return {ASSET}
            if tensor == self.saver_filename:
                return {SAVER_FILENAME}
            node = self.nodes.get(name)
            if node is not None and node.op == "ReadVariableOp" and node.input:
                return self._variable_sources(node.input[0], seen)
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
        for scope, node in self.callers[function]:
            data_inputs = [ref for ref in node.input if not ref.startswith("^")]
            direct = node.op == function or (node.op in _DIRECT_CALLS and node.attr["f"].func.name == function)
            if not direct or index >= len(data_inputs):
                found.add(OTHER)  # control-flow bodies and odd calls: not mapped, so not proven
                continue
            found |= self._sources(scope, data_inputs[index], seen)
        exposed = self.meta_graph.object_graph_def.concrete_functions.get(function)
        if exposed is not None:
            bound = list(exposed.bound_inputs)
            regular = len(self.arguments[function]) - len(bound)
            found.add(ASSET if index >= regular and bound[index - regular] in self.asset_objects else OTHER)
        return found or {OTHER}

    def _variable_sources(self, handle_ref: str, seen: frozenset) -> set[str]:
        """A TF2 export keeps asset paths in graph variables: the value read is whatever the
        graph assigns, provided the handle goes nowhere else (a call or a restore could
        assign it from anywhere)."""
        uses = self.consumers[_node_name(handle_ref)]
        if not uses or any(use.op not in _VARIABLE_USES for use in uses):
            return {OTHER}
        assigned = [use for use in uses if use.op == "AssignVariableOp" and len(use.input) > 1]
        found: set[str] = set()
        for assign in assigned:
            found |= self._sources(None, assign.input[1], seen)
        return found or {OTHER}

    # --- assets --------------------------------------------------------------------------------

    def _assets(self) -> tuple[set[str], set[int]]:
        """The asset tensors (TF1) and asset objects (TF2) whose files are the model's own; an
        asset whose file name leaves `assets/` or is missing is refused outright."""
        files = [*self.meta_graph.asset_file_def, *self._legacy_assets()]
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
        from tensorflow.core.protobuf import meta_graph_pb2

        collection = self.meta_graph.collection_def.get(_LEGACY_ASSETS)
        found = []
        for packed in collection.any_list.value if collection is not None else []:
            asset = meta_graph_pb2.AssetFileDef()
            if packed.Unpack(asset):
                found.append(asset)
        return found


def _where(scope: str | None, node) -> str:
    return f"in function {scope}" if scope else f"in the graph, node {node.name!r}"
