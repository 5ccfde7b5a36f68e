namespace LlmBuild.Core.Diagnostics;

public static partial class ErrorCodes
{
    [Code("The file is not a bmodel: too short, or its header has the wrong magic or sizes.")]
    public const string BModelBadHeader = "LLMB0401";
    [Code("The bmodel file is shorter than its header says: it was truncated.")]
    public const string BModelTruncated = "LLMB0402";
    [Code("The bmodel's flatbuffer is corrupt: an offset, length or vtable points outside the buffer, or a required field is missing.")]
    public const string BModelCorrupt = "LLMB0403";
    [Code("A bmodel binary (offset, size) points outside the file's binary blob.")]
    public const string BModelBinaryOutOfRange = "LLMB0404";
    [Code("The bmodel to write is invalid (no nets, empty names, a binary that was not added to the blob).")]
    public const string BModelInvalid = "LLMB0405";
    [Code("Two bmodels being combined disagree: a net seen twice has mismatched inputs/outputs, or the chips differ.")]
    public const string BModelCombineConflict = "LLMB0406";
    [Code("The combined bmodel is larger than the sum of its unique parts: weight deduplication failed.")]
    public const string BModelCombineTooLarge = "LLMB0407";
    [Code("A bmodel coefficient blob does not match its sha256 check code.")]
    public const string BModelCheckCodeMismatch = "LLMB0408";

    [Code("A bmodel net's tensor has an invalid shape, dtype or size (a dimension below 1 or above 2^31-1, or a size that is not shape × dtype), or breaks the net contract.")]
    public const string BModelBadTensor = "LLMB0410";
    [Code("Running the bmodel in the emulator needs more memory than this machine has.")]
    public const string BModelTooLargeToLoad = "LLMB0411";
}
