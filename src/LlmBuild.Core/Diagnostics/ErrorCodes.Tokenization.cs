namespace LlmBuild.Core.Diagnostics;

public static partial class ErrorCodes
{
    [Code("No tokenizer files (tokenizer.json, or vocab.json + merges.txt) were found in the config folder.")]
    public const string TokenizerNotFound = "LLMB0601";
    [Code("A tokenizer file cannot be parsed or is inconsistent.")]
    public const string BadTokenizerFile = "LLMB0602";
    [Code("The tokenizer declares a model, normalizer, pre-tokenizer, decoder or post-processor LlmBuild does not support.")]
    public const string UnsupportedTokenizerFeature = "LLMB0603";
    [Code("The config folder has no chat template.")]
    public const string ChatTemplateNotFound = "LLMB0610";
    [Code("The chat template has a syntax error.")]
    public const string ChatTemplateSyntax = "LLMB0611";
    [Code("The chat template uses a Jinja construct LlmBuild does not support.")]
    public const string ChatTemplateUnsupported = "LLMB0612";
    [Code("The chat template failed while rendering (raise_exception, a type error, an undefined value).")]
    public const string ChatTemplateRender = "LLMB0613";
    [Code("A messages file is not a JSON list of {role, content} objects.")]
    public const string BadMessages = "LLMB0614";
    [Code("The prompt does not fit in the model's input length even without history.")]
    public const string PromptTooLong = "LLMB0620";
}
