using System.Text.Json;
using LlmBuild.Core.Diagnostics;
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

    public static ChatTemplate Load(string configDir)
    {
        string configPath = Path.Combine(configDir, "tokenizer_config.json");
        var config = Json.ReadOptional(configPath);
        var specialMap = Json.ReadOptional(Path.Combine(configDir, "special_tokens_map.json"));
        string? source = null;
        string file = configPath;
        string jinjaPath = Path.Combine(configDir, "chat_template.jinja");
        string jsonPath = Path.Combine(configDir, "chat_template.json");
        if (System.IO.File.Exists(jinjaPath))
        {
            source = System.IO.File.ReadAllText(jinjaPath);
            file = jinjaPath;
        }
        else if (System.IO.File.Exists(jsonPath) && Json.Read(jsonPath) is var j && j.TryGetProperty("chat_template", out var jt))
        {
            source = TemplateText(jt, jsonPath);
            file = jsonPath;
        }
        else if (config is { } c && c.TryGetProperty("chat_template", out var ct) && ct.ValueKind != JsonValueKind.Null)
            source = TemplateText(ct, configPath);
        if (source is null)
            throw new LlmBuildException(ErrorCodes.ChatTemplateNotFound,
                $"'{Path.GetFullPath(configDir)}' has no chat template (chat_template in tokenizer_config.json, chat_template.jinja or chat_template.json). " +
                "Base models have none; use an instruct/chat checkpoint or add a template.", configDir);

        var special = new Dictionary<string, object?>(StringComparer.Ordinal);
        foreach (var doc in new[] { specialMap, config })
        {
            if (doc is not { } d) continue;
            foreach (var p in d.EnumerateObject())
            {
                if (!p.Name.EndsWith("_token", StringComparison.Ordinal) && p.Name != "additional_special_tokens") continue;
                object? value = p.Value.ValueKind switch
                {
                    JsonValueKind.String => p.Value.GetString(),
                    JsonValueKind.Object when p.Value.TryGetProperty("content", out var content) => content.GetString(),
                    JsonValueKind.Array => p.Value.EnumerateArray().Select(x => x.ValueKind == JsonValueKind.String ? x.GetString()
                        : x.TryGetProperty("content", out var xc) ? xc.GetString() : null).Cast<object?>().ToList(),
                    _ => null,
                };
                if (value is not null) special[p.Name] = value;
            }
        }
        return FromSource(source, special, file);
    }

    /// <summary>A template from its text; <paramref name="specialTokens"/> maps names such as bos_token to values.</summary>
    public static ChatTemplate FromSource(string source, IReadOnlyDictionary<string, object?>? specialTokens = null, string file = "<template>")
    {
        var special = specialTokens?.ToDictionary(p => p.Key, p => p.Value, StringComparer.Ordinal) ?? new(StringComparer.Ordinal);
        try
        {
            return new ChatTemplate(source, JinjaTemplate.Parse(source), special, file);
        }
        catch (LlmBuildException e)
        {
            throw new LlmBuildException(e.Code, $"{file}: {e.Message}", file, e);
        }
    }

    private static string TemplateText(JsonElement e, string file)
    {
        if (e.ValueKind == JsonValueKind.String) return e.GetString()!;
        if (e.ValueKind == JsonValueKind.Array)
        {
            // A list of named templates: use "default".
            foreach (var t in e.EnumerateArray())
                if (t.TryGetProperty("name", out var n) && n.GetString() == "default" && t.TryGetProperty("template", out var tt))
                    return tt.GetString()!;
            throw new LlmBuildException(ErrorCodes.ChatTemplateNotFound, $"{file}: chat_template is a list without a \"default\" template.", file);
        }
        throw new LlmBuildException(ErrorCodes.ChatTemplateSyntax, $"{file}: chat_template is neither a string nor a list.", file);
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
