namespace LlmBuild.Core.Diagnostics;

public static partial class ErrorCodes
{
    [Code("The chip has no built-in backend.")]
    public const string UnsupportedChip = "LLMB0501";
    [Code("The codegen cannot lower an op, dtype or option for the chip.")]
    public const string CodegenUnsupported = "LLMB0502";
    [Code("Weights, KV cache and activations do not fit the device memory (DeviceMemoryMiB).")]
    public const string DeviceMemoryOverflow = "LLMB0503";
    [Code("A piece's weight file lacks a tensor the piece needs, or holds it with another dtype or shape.")]
    public const string PieceWeightsMismatch = "LLMB0504";
    [Code("The bmodel was not built by LlmBuild's built-in backend, or its program is damaged; the emulator cannot run it.")]
    public const string NotEmulatorModel = "LLMB0505";
    [Code("A net was run with an unknown name, a missing input or a wrongly shaped input.")]
    public const string RuntimeBadInput = "LLMB0506";
    [Code("The built model's outputs differ from the f32 reference beyond the thresholds of its quantize mode.")]
    public const string VerifyFailed = "LLMB0507";
    [Code("TPU-MLIR's model_deploy.py failed or cannot be found.")]
    public const string TpuMlirFailed = "LLMB0508";
    [Code("A token id list (--ids) is empty, malformed or outside the vocabulary.")]
    public const string BadTokenIds = "LLMB0509";
    [Code("NumDevice cannot split the model's blocks: it must divide the attention heads, kv heads and intermediate size, with DistributeStrategy=tp.")]
    public const string TensorParallelSplit = "LLMB0520";
    [Code("With NumDevice > 1, o_proj/down_proj inputs are split across devices, which an act-order (desc_act) GPTQ weight's permuted inputs do not allow.")]
    public const string TensorParallelPermuted = "LLMB0522";
}
