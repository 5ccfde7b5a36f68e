namespace LlmBuild.Core.Diagnostics;

public static partial class ErrorCodes
{
    [Code("The model folder holds no weight files (model.safetensors, its sharded index, or pytorch_model*.bin).")]
    public const string NoWeightFiles = "LLMB0101";
    [Code("A safetensors file is malformed: bad header length, invalid header JSON, or a tensor entry with bad fields.")]
    public const string BadSafetensors = "LLMB0102";
    [Code("A tensor's byte range is invalid: outside the file, overlapping another tensor, or not shape × dtype bytes long.")]
    public const string BadTensorOffsets = "LLMB0103";
    [Code("A tensor has a dtype LlmBuild cannot read, or a dtype the operation does not accept.")]
    public const string UnsupportedTensorDType = "LLMB0104";
    [Code("The checkpoint has no tensor of that name.")]
    public const string TensorNotFound = "LLMB0105";
    [Code("A sharded checkpoint's index (*.index.json) is malformed or names a missing shard.")]
    public const string BadCheckpointIndex = "LLMB0106";
    [Code("A pytorch .bin checkpoint is malformed: not a zip, a bad pickle, or a storage that is missing or too short.")]
    public const string BadTorchCheckpoint = "LLMB0107";
    [Code("A pytorch .bin pickle refers to a global outside the allowed tensor-rebuild set; nothing was executed.")]
    public const string ForbiddenPickleGlobal = "LLMB0108";
    [Code("A source tensor's shape differs from the shape the model configuration implies.")]
    public const string TensorShapeMismatch = "LLMB0109";
    [Code("An .npz or .npy file is malformed, uses an unsupported layout, or is read past its bounds.")]
    public const string BadNumpyFile = "LLMB0110";
    [Code("An .npz file has no entry of that name.")]
    public const string NpzKeyNotFound = "LLMB0111";
}
