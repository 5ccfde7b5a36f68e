using System.Text.Json;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.IO;
using LlmBuild.Core.Tokenization.Templates;

namespace LlmBuild.Core.Tokenization;

/// <summary>One chat message.</summary>
public sealed record ChatMessage(string Role, string Content);

/// <summary>
/// A model's chat template (tokenizer_config.json's chat_template, chat_template.jinja or chat_template.json),
/// rendered like transformers' apply_chat_template: the variables are messages, add_generation_prompt, tools and
/// documents (none), the special tokens by name (bos_token, eos_token, ...), raise_exception and strftime_now.
/// </summary>
public sealed class ChatTemplate
{
    private readonly JinjaTemplate _template;
    private readonly Dictionary<string, object?> _specialTokens;

    private ChatTemplate(string source, JinjaTemplate template, Dictionary<string, object?> specialTokens, string file)
    {
        Source = source;
        _template = template;
        _specialTokens = specialTokens;
        File = file;
    }

    /// <summary>The template text.</summary>
    public string Source { get; }

    /// <summary>The file the template came from.</summary>
    public string File { get; }

    /// <summary>The clock behind strftime_now (today's date in Llama-3 templates); set it for reproducible output.</summary>
    public Func<DateTime> Clock { get; set; } = () => DateTime.Now;

    /// <summary>The config folder's chat template; <paramref name="limits"/> bounds every render (default
    /// <see cref="JinjaLimits.Default"/>).</summary>
    public static ChatTemplate Load(string configDir, JinjaLimits? limits = null)
    {
        string configPath = Path.Combine(configDir, "tokenizer_config.json");
        var config = TokenizerLoader.ReadOptional(configPath);
        var specialMap = TokenizerLoader.ReadOptional(Path.Combine(configDir, "special_tokens_map.json"));
        string? source = null;
        string file = configPath;
        string jinjaPath = Path.Combine(configDir, "chat_template.jinja");
        string jsonPath = Path.Combine(configDir, "chat_template.json");
        if (System.IO.File.Exists(jinjaPath))
        {
            source = JsonInput.ReadText(jinjaPath, "chat_template.jinja");
            file = jinjaPath;
        }
        else if (System.IO.File.Exists(jsonPath) && TokenizerLoader.Read(jsonPath)["chat_template"] is { Exists: true } jt)
        {
            source = TemplateText(jt);
            file = jsonPath;
        }
        else if (config is { } c && !c["chat_template"].IsMissingOrNull)
            source = TemplateText(c["chat_template"]);
        if (source is null)
            throw new LlmBuildException(ErrorCodes.ChatTemplateNotFound,
                $"'{Path.GetFullPath(configDir)}' has no chat template (chat_template in tokenizer_config.json, chat_template.jinja or chat_template.json). " +
                "Base models have none; use an instruct/chat checkpoint or add a template.", configDir);

        var special = new Dictionary<string, object?>(StringComparer.Ordinal);
        foreach (var doc in new[] { specialMap, config })
        {
            if (doc is not { } d) continue;
            foreach (var (name, _) in d.Members())
            {
                if (!name.EndsWith("_token", StringComparison.Ordinal) && name != "additional_special_tokens") continue;
                var value = d[name];
                // Flags such as add_bos_token also end in "_token": only strings, token objects and lists are tokens.
                object? token = value.Kind switch
                {
                    JsonValueKind.String or JsonValueKind.Object => TokenizerLoader.TokenContent(value),
                    JsonValueKind.Array => value.Items().Select(x => (object?)TokenizerLoader.TokenContent(x)).ToList(),
                    _ => null,
                };
                if (token is not null) special[name] = token;
            }
        }
        return FromSource(source, special, file, limits);
    }

    /// <summary>A template from its text; <paramref name="specialTokens"/> maps names such as bos_token to values;
    /// <paramref name="limits"/> bounds every render (default <see cref="JinjaLimits.Default"/>).</summary>
    public static ChatTemplate FromSource(string source, IReadOnlyDictionary<string, object?>? specialTokens = null, string file = "<template>",
        JinjaLimits? limits = null)
    {
        var special = specialTokens?.ToDictionary(p => p.Key, p => p.Value, StringComparer.Ordinal) ?? new(StringComparer.Ordinal);
        try
        {
            return new ChatTemplate(source, JinjaTemplate.Parse(source, limits), special, file);
        }
        catch (LlmBuildException e)
        {
            throw new LlmBuildException(e.Code, $"{file}: {e.Message}", file, e);
        }
    }

    private static string TemplateText(JsonField e)
    {
        if (e.IsString) return e.String();
        if (e.IsArray)
        {
            // A list of named templates: use "default".
            foreach (var t in e.Items())
                if (t.RequireObject()["name"].String() == "default") return t["template"].String();
            throw new LlmBuildException(ErrorCodes.ChatTemplateNotFound, $"{e.File}: {e.Path} is a list without a \"default\" template.", e.File);
        }
        throw e.Error($"must be a template (a string) or a list of {{\"name\", \"template\"}} objects, found {e.Describe()}");
    }

    /// <summary>Renders the conversation; <paramref name="extraVariables"/> adds template options (enable_thinking, ...).</summary>
    public string Render(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt,
        IReadOnlyDictionary<string, object?>? extraVariables = null)
    {
        var list = messages.Select(m => (object?)new Dictionary<string, object?> { ["role"] = m.Role, ["content"] = m.Content }).ToList();
        var variables = new Dictionary<string, object?>(_specialTokens, StringComparer.Ordinal)
        {
            ["messages"] = list,
            ["add_generation_prompt"] = addGenerationPrompt,
            ["tools"] = null,
            ["documents"] = null,
            ["strftime_now"] = new JinjaCallable("strftime_now", (args, _) =>
                Strftime(Clock(), args.Count > 0 ? args[0] as string ?? "" : "")),
        };
        if (extraVariables is not null) foreach (var (k, v) in extraVariables) variables[k] = v;
        try
        {
            return _template.Render(variables);
        }
        catch (LlmBuildException e)
        {
            throw new LlmBuildException(e.Code, $"{File}: {e.Message}", File, e);
        }
    }

    /// <summary>Python's strftime for the directives templates use.</summary>
    internal static string Strftime(DateTime t, string format)
    {
        var sb = new System.Text.StringBuilder();
        var inv = System.Globalization.CultureInfo.InvariantCulture;
        for (int i = 0; i < format.Length; i++)
        {
            if (format[i] != '%' || i + 1 == format.Length) { sb.Append(format[i]); continue; }
            char d = format[++i];
            sb.Append(d switch
            {
                'd' => t.ToString("dd", inv),
                'b' => t.ToString("MMM", inv),
                'B' => t.ToString("MMMM", inv),
                'm' => t.ToString("MM", inv),
                'Y' => t.ToString("yyyy", inv),
                'y' => t.ToString("yy", inv),
                'H' => t.ToString("HH", inv),
                'M' => t.ToString("mm", inv),
                'S' => t.ToString("ss", inv),
                'A' => t.ToString("dddd", inv),
                'a' => t.ToString("ddd", inv),
                'j' => t.DayOfYear.ToString("000", inv),
                '%' => "%",
                _ => "%" + d,
            });
        }
        return sb.ToString();
    }
}
