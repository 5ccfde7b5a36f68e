namespace LlmBuild.Core.Diagnostics;

public static partial class ErrorCodes
{
    [Code("A piece bmodel references coefficient bytes in a weight file that changed or disappeared since the piece was compiled; every piece bmodel that reads the file is deleted so the next build compiles it again.")]
    public const string StaleCoefficientReference = "LLMB0430";
    [Code("A piece bmodel's coefficient references are malformed (the trailer after the bmodel cannot be read, or a reference lies outside its weight file entry).")]
    public const string BadCoefficientReference = "LLMB0431";
    [Code("A weight owner's file holds two constants of one name with different values: two pieces of the owner disagree on an option-dependent table.")]
    public const string OwnerConstantConflict = "LLMB0432";
}
