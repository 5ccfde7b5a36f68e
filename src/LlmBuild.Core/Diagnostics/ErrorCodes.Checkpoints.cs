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
    [Code("A GGUF file's header is malformed: wrong magic, an unsupported version, or counts that do not fit the file.")]
    public const string BadGgufHeader = "LLMB0120";
    [Code("A GGUF metadata key/value is malformed: an unknown value type, a string or array past the end of the file, invalid UTF-8, a duplicate key, or a key with the wrong type.")]
    public const string BadGgufMetadata = "LLMB0121";
    [Code("A GGUF tensor info is malformed: a bad dimension count or size, a duplicate name, or a row length that is not a whole number of blocks.")]
    public const string BadGgufTensorInfo = "LLMB0122";
    [Code("A GGUF file's alignment is not a power of two, or a tensor's data offset is not aligned to it.")]
    public const string BadGgufAlignment = "LLMB0123";
    [Code("A GGUF tensor's data lies outside the file or overlaps another tensor's data.")]
    public const string BadGgufTensorData = "LLMB0124";
    [Code("A GGUF tensor has a ggml type LlmBuild cannot read (the message names it).")]
    public const string UnsupportedGgmlType = "LLMB0125";
    [Code("A GGUF file's architecture or its metadata cannot be mapped to a Hugging Face configuration (unsupported architecture, missing key, unsupported RoPE scaling).")]
    public const string UnsupportedGgufArchitecture = "LLMB0126";
    [Code("A GGUF tensor name has no Hugging Face counterpart, or its shape disagrees with the architecture metadata.")]
    public const string UnmappedGgufTensor = "LLMB0127";
    [Code("A GGUF file's tokenizer metadata is missing, inconsistent or of an unsupported kind, so no tokenizer files can be written.")]
    public const string BadGgufTokenizer = "LLMB0128";
    [Code("An FP8 weight lacks its weight_scale_inv, or the scale's shape disagrees with the weight and quantization_config's weight_block_size.")]
    public const string BadFp8Weight = "LLMB0130";
}
