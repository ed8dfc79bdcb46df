"""The op allow-list: which TensorFlow ops an uploaded model may run.

A SavedModel is a program written by a stranger, and TensorFlow's op set is a runtime with a
file system, sockets and process control in it. A model may compute and nothing else, so the
list names what it may do rather than what it may not: an op missing here (a new TensorFlow
release's, a custom kernel's, an internal `_`-prefixed one) is refused until someone reads it
and adds it to the family it belongs to. The lists were drawn from TensorFlow 2.21's
generated op modules (`tf.raw_ops`, grouped by the `gen_*_ops` module each op comes from) and
then pruned by hand; `graphcheck` applies them before anything loads or calls the model.

Allowed, because they only compute on tensors the graph already holds:
- MATH: element-wise math, reductions, matmul and linear algebra, FFTs, bitwise, special
  functions. Not the CSR sparse-matrix ops: rarely served, and a steady source of kernel
  crashes in TensorFlow's advisories (a crash takes the other tenants' runs down with it).
- NEURAL_NETWORKS: convolutions, pooling, normalisation, activations, RNN cells (the cuDNN ones
  are what Keras saves for GPU-trained LSTMs), CTC, candidate sampling, and the fake-quant ops
  of quantisation-aware training. Not the integer-quantised kernels (Quantized*, Requantize*,
  UniformQuantized*): rarely served from a SavedModel, and, like the CSR ops, crash-prone.
  Not FixedUnigramCandidateSampler: it opens the file its `vocab_file` attribute names.
- ARRAYS: shapes, slicing, gathers and scatters into tensors, padding, sparse and ragged
  tensors, tensor lists and maps, and the in-memory TensorArray and stack of TF1 loops.
  Not ImmutableConst (it memory-maps a file named in an attribute) nor the debug identities.
- RANDOM: stateless and stateful random numbers (the state is the model's own variable).
- CONTROL_FLOW: If/While/Case, function calls (the called function is checked too), TF1's
  Switch/Merge loops, Assert. Not Abort (it kills the scorer's process), RemoteCall (it runs a
  function on another task) nor SymbolicGradient (it runs gradient functions no one checks).
- TEXT_AND_MEDIA: string ops, tf.Example and CSV parsing, image and audio decoding and
  encoding: serving models take text, serialised examples and images, and these ops read
  nothing but their input tensors. ShardedFilename/ShardedFilespec only format strings.
- VARIABLES: reading and assigning the model's own variables (resource and TF1 ref style).
  Not mutexes: a lock shared by name could stall another tenant's model.
- TABLES: lookup tables built from tensors, and lookups. Table initialisation from a text
  file is RESTRICTED, below.

Allowed ops can still forge what they may not hold. A resource or variant tensor written out as
bytes (a Const's value, ParseTensor's input) is a handle to any table or variable of the
process, another tenant's included, or a crafted variant that crashes it; so no attribute
may hold a tensor of those types, and the DESERIALIZERS may not produce them. Empty with
`init=false` hands back uninitialised memory (another model's data, perhaps), so only
`init=true` is allowed.

Restricted, allowed only where `graphcheck` can prove what they touch:
- ASSET_READERS (InitializeTableFromTextFile*): a vocabulary from the model's own `assets/`
  folder is how real models ship StringLookup-style tables. Allowed only when the filename
  input comes from an asset the SavedModel declares (a TF1 asset tensor, or a TF2 function
  capture bound to an asset object), never from a constant or the caller's data.
- RESTORE_OPS: the loader's own variable restore reads the model's `variables/` checkpoint.
  Allowed only in what the saver's restore op runs, with the prefix input being the saver's
  filename tensor (which the loader feeds with that folder), and never where a signature or
  an init op can reach them.
- SAVE_OPS: every TF2 export carries a save function that no loader runs; allowed only there.

Refused (by being absent), each family for what it can reach:
- files and directories: ReadFile, WriteFile, MatchingFiles, the TF1 readers (TFRecord,
  TextLine, FixedLengthRecord, WholeFile, LMDB), checkpoint remapping (LoadAndRemapMatrix,
  GenerateVocabRemapping), FileSystemSetConfiguration;
- every tf.data dataset and iterator (TFRecordDataset and friends read files; none is needed
  to serve);
- printing and summaries (PrintV2 writes to a file its attribute names; summary writers create
  event files), and the debugger's ops (DebugIdentityV2 sends tensors to file:// or grpc://);
- py_func, EagerPyFunc: they call Python functions of the process that loads the model;
- anything that talks over a network: collectives, NCCL, Send/Recv, TPU and XLA host ops;
- DecodeProtoV2/EncodeProto (they read descriptor files named in an attribute);
- queues, barriers, accumulators, staging areas, session handles and the Batch/BatchFunction
  ops: they live in containers shared by name across every model of a process;
- optimiser updates and boosted-tree training: serving never trains.
"""
from __future__ import annotations


def _ops(names: str) -> frozenset[str]:
    return frozenset(names.split())


MATH = _ops("""
    Abs AccumulateNV2 Acos Acosh Add AddN AddV2 All Angle Any ApproximateEqual ArgMax ArgMin
    Asin Asinh Atan Atan2 Atanh BandedTriangularSolve BatchCholesky BatchCholeskyGrad BatchFFT
    BatchFFT2D BatchFFT3D BatchIFFT BatchIFFT2D BatchIFFT3D BatchMatMul BatchMatMulV2
    BatchMatMulV3 BatchMatrixDeterminant BatchMatrixInverse BatchMatrixSolve BatchMatrixSolveLs
    BatchMatrixTriangularSolve BatchSelfAdjointEig BatchSelfAdjointEigV2 BatchSvd BesselI0
    BesselI0e BesselI1 BesselI1e BesselJ0 BesselJ1 BesselK0 BesselK0e BesselK1 BesselK1e
    BesselY0 BesselY1 Betainc Bincount BitwiseAnd BitwiseOr BitwiseXor Bucketize Cast Ceil
    Cholesky CholeskyGrad ClipByValue Complex ComplexAbs Conj Cos Cosh Cross Cumprod Cumsum
    CumulativeLogsumexp Dawsn DenseBincount Digamma Div DivNoNan Eig Einsum Equal Erf Erfc
    Erfinv EuclideanNorm Exp Expint Expm1 FFT FFT2D FFT3D FFTND Floor FloorDiv FloorMod
    FresnelCos FresnelSin Greater GreaterEqual HistogramFixedWidth IFFT IFFT2D IFFT3D IFFTND
    IRFFT IRFFT2D IRFFT3D IRFFTND Igamma IgammaGradA Igammac Imag Inv InvGrad Invert IsFinite
    IsInf IsNan LeftShift Less LessEqual Lgamma LinSpace Log Log1p LogMatrixDeterminant
    LogicalAnd LogicalNot LogicalOr Lu MatMul MatrixDeterminant MatrixExponential MatrixInverse
    MatrixLogarithm MatrixSolve MatrixSolveLs MatrixSquareRoot MatrixTriangularSolve Max Maximum
    Mean Min Minimum Mod Mul MulNoNan Ndtri Neg NextAfter NotEqual Polygamma PopulationCount Pow
    Prod Qr RFFT RFFT2D RFFT3D RFFTND RaggedBincount Range Real RealDiv Reciprocal
    ReciprocalGrad RightShift Rint Round Rsqrt RsqrtGrad SegmentMax SegmentMaxV2 SegmentMean
    SegmentMin SegmentMinV2 SegmentProd SegmentProdV2 SegmentSum SegmentSumV2 Select SelectV2
    SelfAdjointEig SelfAdjointEigV2 Sigmoid SigmoidGrad Sign Sin Sinh SobolSample SparseBincount
    SparseMatMul SparseSegmentMean SparseSegmentMeanGrad SparseSegmentMeanGradV2
    SparseSegmentMeanWithNumSegments SparseSegmentSqrtN SparseSegmentSqrtNGrad
    SparseSegmentSqrtNGradV2 SparseSegmentSqrtNWithNumSegments SparseSegmentSum
    SparseSegmentSumGrad SparseSegmentSumGradV2 SparseSegmentSumWithNumSegments Spence Sqrt
    SqrtGrad Square SquaredDifference Sub Sum Svd Tan Tanh TanhGrad TridiagonalMatMul
    TridiagonalSolve TruncateDiv TruncateMod UnsortedSegmentMax UnsortedSegmentMin
    UnsortedSegmentProd UnsortedSegmentSum Xdivy Xlog1py Xlogy Zeta
""")

NEURAL_NETWORKS = _ops("""
    AllCandidateSampler ApproxTopK AvgPool AvgPool3D AvgPool3DGrad AvgPoolGrad
    BatchNormWithGlobalNormalization BatchNormWithGlobalNormalizationGrad BiasAdd BiasAddGrad
    BiasAddV1 BlockLSTM BlockLSTMGrad BlockLSTMGradV2 BlockLSTMV2 CTCBeamSearchDecoder
    CTCGreedyDecoder CTCLoss CTCLossV2 ComputeAccidentalHits Conv Conv2D Conv2DBackpropFilter
    Conv2DBackpropFilterV2 Conv2DBackpropInput Conv2DBackpropInputV2 Conv3D Conv3DBackpropFilter
    Conv3DBackpropFilterV2 Conv3DBackpropInput Conv3DBackpropInputV2 CudnnRNN CudnnRNNBackprop
    CudnnRNNBackpropV2 CudnnRNNBackpropV3 CudnnRNNCanonicalToParams CudnnRNNCanonicalToParamsV2
    CudnnRNNParamsSize CudnnRNNParamsToCanonical CudnnRNNParamsToCanonicalV2 CudnnRNNV2
    CudnnRNNV3 DataFormatDimMap DataFormatVecPermute DepthwiseConv2dNative
    DepthwiseConv2dNativeBackpropFilter DepthwiseConv2dNativeBackpropInput Dilation2D
    Dilation2DBackpropFilter Dilation2DBackpropInput Elu EluGrad FractionalAvgPool
    FractionalAvgPoolGrad FractionalMaxPool FractionalMaxPoolGrad FusedBatchNorm
    FusedBatchNormGrad FusedBatchNormGradV2 FusedBatchNormGradV3 FusedBatchNormV2
    FusedBatchNormV3 FusedPadConv2D FusedResizeAndPadConv2D GRUBlockCell GRUBlockCellGrad InTopK
    InTopKV2 IsotonicRegression KMC2ChainInitialization KmeansPlusPlusInitialization L2Loss LRN
    LRNGrad LSTMBlockCell LSTMBlockCellGrad LeakyRelu LeakyReluGrad
    LearnedUnigramCandidateSampler LogSoftmax LogUniformCandidateSampler MaxPool MaxPool3D
    MaxPool3DGrad MaxPool3DGradGrad MaxPoolGrad MaxPoolGradGrad MaxPoolGradGradV2
    MaxPoolGradGradWithArgmax MaxPoolGradV2 MaxPoolGradWithArgmax MaxPoolV2 MaxPoolWithArgmax
    NearestNeighbors NthElement Relu Relu6 Relu6Grad ReluGrad Selu SeluGrad Softmax
    SoftmaxCrossEntropyWithLogits Softplus SoftplusGrad Softsign SoftsignGrad
    SparseSoftmaxCrossEntropyWithLogits ThreadUnsafeUnigramCandidateSampler TopK TopKV2
    UniformCandidateSampler
""")

ARRAYS = _ops("""
    AddManySparseToTensorsMap AddSparseToTensorsMap BatchMatrixBandPart BatchMatrixDiag
    BatchMatrixDiagPart BatchMatrixSetDiag BatchToSpace BatchToSpaceND Bitcast BroadcastArgs
    BroadcastGradientArgs BroadcastTo CheckNumerics CheckNumericsV2
    CompositeTensorVariantFromComponents CompositeTensorVariantToComponents Concat ConcatOffset
    ConcatV2 ConjugateTranspose Const DeepCopy DenseCountSparseOutput DenseToDenseSetOperation
    DenseToSparseSetOperation DepthToSpace DeserializeManySparse DeserializeSparse Diag DiagPart
    DynamicPartition DynamicStitch EditDistance Empty EmptyTensorList EmptyTensorMap EnsureShape
    ExpandDims ExtractImagePatches ExtractVolumePatches FakeQuantWithMinMaxArgs
    FakeQuantWithMinMaxArgsGradient FakeQuantWithMinMaxVars FakeQuantWithMinMaxVarsGradient
    FakeQuantWithMinMaxVarsPerChannel FakeQuantWithMinMaxVarsPerChannelGradient Fill Fingerprint
    Gather GatherNd GatherV2 GuaranteeConst Identity IdentityN InplaceAdd InplaceSub
    InplaceUpdate InvertPermutation ListDiff LowerBound MatrixBandPart MatrixDiag MatrixDiagPart
    MatrixDiagPartV2 MatrixDiagPartV3 MatrixDiagV2 MatrixDiagV3 MatrixSetDiag MatrixSetDiagV2
    MatrixSetDiagV3 MirrorPad MirrorPadGrad OneHot OnesLike OptionalFromValue OptionalGetValue
    OptionalHasValue OptionalNone Pack Pad PadV2 ParallelConcat ParallelDynamicStitch
    Placeholder PlaceholderV2 PlaceholderWithDefault PreventGradient QuantizeAndDequantize
    QuantizeAndDequantizeV2 QuantizeAndDequantizeV3 QuantizeAndDequantizeV4
    QuantizeAndDequantizeV4Grad RaggedCountSparseOutput RaggedCross RaggedFillEmptyRows
    RaggedFillEmptyRowsGrad RaggedGather RaggedRange RaggedTensorFromVariant
    RaggedTensorToSparse RaggedTensorToTensor RaggedTensorToVariant
    RaggedTensorToVariantGradient Rank RefIdentity Reshape ResourceStridedSliceAssign Reverse
    ReverseSequence ReverseV2 Roll ScatterNd ScatterNdNonAliasingAdd SerializeManySparse
    SerializeSparse SetSize Shape ShapeN Size Slice Snapshot SpaceToBatch SpaceToBatchND
    SpaceToDepth SparseAdd SparseAddGrad SparseConcat SparseCountSparseOutput SparseCross
    SparseCrossHashed SparseCrossV2 SparseDenseCwiseAdd SparseDenseCwiseDiv SparseDenseCwiseMul
    SparseFillEmptyRows SparseFillEmptyRowsGrad SparseReduceMax SparseReduceMaxSparse
    SparseReduceSum SparseReduceSumSparse SparseReorder SparseReshape SparseSlice
    SparseSliceGrad SparseSoftmax SparseSparseMaximum SparseSparseMinimum SparseSplit
    SparseTensorDenseAdd SparseTensorDenseMatMul SparseToDense SparseToSparseSetOperation Split
    SplitV Squeeze Stack StackClose StackCloseV2 StackPop StackPopV2 StackPush StackPushV2
    StackV2 StopGradient StridedSlice StridedSliceAssign StridedSliceGrad
    TakeManySparseFromTensorsMap TensorArray TensorArrayClose TensorArrayCloseV2
    TensorArrayCloseV3 TensorArrayConcat TensorArrayConcatV2 TensorArrayConcatV3
    TensorArrayGather TensorArrayGatherV2 TensorArrayGatherV3 TensorArrayGrad TensorArrayGradV2
    TensorArrayGradV3 TensorArrayGradWithShape TensorArrayPack TensorArrayRead TensorArrayReadV2
    TensorArrayReadV3 TensorArrayScatter TensorArrayScatterV2 TensorArrayScatterV3
    TensorArraySize TensorArraySizeV2 TensorArraySizeV3 TensorArraySplit TensorArraySplitV2
    TensorArraySplitV3 TensorArrayUnpack TensorArrayV2 TensorArrayV3 TensorArrayWrite
    TensorArrayWriteV2 TensorArrayWriteV3 TensorListConcat TensorListConcatLists
    TensorListConcatV2 TensorListElementShape TensorListFromTensor TensorListGather
    TensorListGetItem TensorListLength TensorListPopBack TensorListPushBack
    TensorListPushBackBatch TensorListReserve TensorListResize TensorListScatter
    TensorListScatterIntoExistingList TensorListScatterV2 TensorListSetItem TensorListSplit
    TensorListStack TensorMapErase TensorMapHasKey TensorMapInsert TensorMapLookup TensorMapSize
    TensorMapStackKeys TensorScatterAdd TensorScatterMax TensorScatterMin TensorScatterSub
    TensorScatterUpdate TensorStridedSliceUpdate Tile TileGrad Transpose Unique UniqueV2
    UniqueWithCounts UniqueWithCountsV2 Unpack UnravelIndex UpperBound Where ZerosLike
""")

RANDOM = _ops("""
    Multinomial NonDeterministicInts ParameterizedTruncatedNormal RandomGamma RandomGammaGrad
    RandomIndexShuffle RandomPoisson RandomPoissonV2 RandomShuffle RandomStandardNormal
    RandomUniform RandomUniformInt RngReadAndSkip RngSkip StatefulRandomBinomial
    StatefulStandardNormal StatefulStandardNormalV2 StatefulTruncatedNormal StatefulUniform
    StatefulUniformFullInt StatefulUniformInt StatelessMultinomial
    StatelessParameterizedTruncatedNormal StatelessRandomBinomial StatelessRandomGammaV2
    StatelessRandomGammaV3 StatelessRandomGetAlg StatelessRandomGetKeyCounter
    StatelessRandomGetKeyCounterAlg StatelessRandomNormal StatelessRandomNormalV2
    StatelessRandomPoisson StatelessRandomUniform StatelessRandomUniformFullInt
    StatelessRandomUniformFullIntV2 StatelessRandomUniformInt StatelessRandomUniformIntV2
    StatelessRandomUniformV2 StatelessShuffle StatelessTruncatedNormal
    StatelessTruncatedNormalV2 TruncatedNormal
""")

CONTROL_FLOW = _ops("""
    Assert Case ControlTrigger DeviceIndex Enter Exit FakeParam For If LoopCond Merge
    NextIteration NoOp PartitionedCall RefEnter RefExit RefMerge RefNextIteration RefSelect
    RefSwitch StatefulPartitionedCall StatelessCase StatelessIf StatelessWhile Switch ToBool
    While
""")

TEXT_AND_MEDIA = _ops("""
    AdjustContrast AdjustContrastv2 AdjustHue AdjustSaturation AsString AudioSpectrogram
    CombinedNonMaxSuppression CropAndResize CropAndResizeGradBoxes CropAndResizeGradImage
    DecodeAndCropJpeg DecodeBase64 DecodeBmp DecodeCSV DecodeCompressed DecodeGif DecodeImage
    DecodeJSONExample DecodeJpeg DecodeJxl DecodePaddedRaw DecodePng DecodeRaw DecodeWav
    DecodeWebP DrawBoundingBoxes DrawBoundingBoxesV2 EncodeBase64 EncodeJpeg
    EncodeJpegVariableQuality EncodePng EncodeWav ExtractGlimpse ExtractGlimpseV2
    ExtractJpegShape GenerateBoundingBoxProposals HSVToRGB ImageProjectiveTransformV2
    ImageProjectiveTransformV3 Mfcc NonMaxSuppression NonMaxSuppressionV2 NonMaxSuppressionV3
    NonMaxSuppressionV4 NonMaxSuppressionV5 NonMaxSuppressionWithOverlaps ParseExample
    ParseExampleV2 ParseSequenceExample ParseSequenceExampleV2 ParseSingleExample
    ParseSingleSequenceExample ParseTensor RGBToHSV RandomCrop ReduceJoin RegexFullMatch
    RegexReplace ResizeArea ResizeBicubic ResizeBicubicGrad ResizeBilinear ResizeBilinearGrad
    ResizeNearestNeighbor ResizeNearestNeighborGrad SampleDistortedBoundingBox
    SampleDistortedBoundingBoxV2 ScaleAndTranslate ScaleAndTranslateGrad SerializeTensor
    ShardedFilename ShardedFilespec StatelessSampleDistortedBoundingBox StaticRegexFullMatch
    StaticRegexReplace StringFormat StringJoin StringLength StringLower StringNGrams StringSplit
    StringSplitV2 StringStrip StringToHashBucket StringToHashBucketFast StringToHashBucketStrong
    StringToNumber StringUpper Substr UnicodeDecode UnicodeDecodeWithOffsets UnicodeEncode
    UnicodeScript UnicodeTranscode UnsortedSegmentJoin
""")

VARIABLES = _ops("""
    Assign AssignAdd AssignAddVariableOp AssignSub AssignSubVariableOp AssignVariableOp
    CountUpTo DestroyResourceOp DisableCopyOnRead IsVariableInitialized ReadVariableOp
    ResourceCountUpTo ResourceGather ResourceGatherNd ResourceScatterAdd ResourceScatterDiv
    ResourceScatterMax ResourceScatterMin ResourceScatterMul ResourceScatterNdAdd
    ResourceScatterNdMax ResourceScatterNdMin ResourceScatterNdSub ResourceScatterNdUpdate
    ResourceScatterSub ResourceScatterUpdate ScatterAdd ScatterDiv ScatterMax ScatterMin
    ScatterMul ScatterNdAdd ScatterNdMax ScatterNdMin ScatterNdSub ScatterNdUpdate ScatterSub
    ScatterUpdate VarHandleOp VarIsInitializedOp Variable VariableShape VariableV2
""")

TABLES = _ops("""
    AnonymousHashTable AnonymousMutableDenseHashTable AnonymousMutableHashTable
    AnonymousMutableHashTableOfTensors HashTable HashTableV2 InitializeTable InitializeTableV2
    LookupTableExport LookupTableExportV2 LookupTableFind LookupTableFindV2 LookupTableImport
    LookupTableImportV2 LookupTableInsert LookupTableInsertV2 LookupTableRemoveV2
    LookupTableSize LookupTableSizeV2 MutableDenseHashTable MutableDenseHashTableV2
    MutableHashTable MutableHashTableOfTensors MutableHashTableOfTensorsV2 MutableHashTableV2
""")

ALLOWED = MATH | NEURAL_NETWORKS | ARRAYS | RANDOM | CONTROL_FLOW | TEXT_AND_MEDIA | VARIABLES | TABLES

# Restricted ops, each with the index of the input that names what it reads or writes.
ASSET_READERS = {"InitializeTableFromTextFile": 1, "InitializeTableFromTextFileV2": 1}
RESTORE_OPS = {"RestoreV2": 0, "Restore": 0, "RestoreSlice": 0}
SAVE_OPS = frozenset({"SaveV2", "Save", "SaveSlices", "MergeV2Checkpoints"})

# Ops that turn bytes into a tensor of the dtype an attribute names: never a resource or variant.
DESERIALIZERS = frozenset({"ParseTensor", "DeserializeSparse", "DeserializeManySparse",
                           "TakeManySparseFromTensorsMap"})

# Ops that pass their first input through unchanged: a traced filename may go through them.
PASS_THROUGH = frozenset({"Identity", "Snapshot", "StopGradient", "PlaceholderWithDefault"})
