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
    [Code("Rendering the chat template took more steps than its budget (JinjaLimits.MaxSteps): a loop or recursion that runs too long.")]
    public const string TemplateStepLimit = "LLMB0630";
    [Code("The chat template nests deeper than its limit (JinjaLimits.MaxDepth): tags or brackets at parse time, macro calls or values at render time.")]
    public const string TemplateDepthLimit = "LLMB0631";
    [Code("The chat template's output, or a string or list it builds, is longer than its limit (JinjaLimits.MaxOutputLength).")]
    public const string TemplateOutputLimit = "LLMB0632";
    [Code("Integer arithmetic in the chat template overflows 64 bits (or an integer literal does not fit them).")]
    public const string TemplateIntegerOverflow = "LLMB0633";
    [Code("generation_config.json has a sampling field of the wrong type or out of range (temperature, top_k, top_p, repetition_penalty).")]
    public const string BadGenerationConfig = "LLMB0640";
}
