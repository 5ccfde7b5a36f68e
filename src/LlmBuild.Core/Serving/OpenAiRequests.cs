using System.Globalization;
using System.Text.Json;
using LlmBuild.Core.Tokenization;

namespace LlmBuild.Core.Serving;

/// <summary>What both endpoints take besides the prompt: limits, sampling, stop sequences, streaming.</summary>
public sealed record GenerationParameters
{
    public int? MaxTokens { get; init; }
    public double? Temperature { get; init; }
    public double? TopP { get; init; }
    /// <summary>0 (or -1) keeps every token.</summary>
    public int? TopK { get; init; }
    public long? Seed { get; init; }
    public double? RepetitionPenalty { get; init; }
    /// <summary>ignore_eos (vLLM's and llama-server's extension): generate through end-of-sequence ids.</summary>
    public bool IgnoreEos { get; init; }
    public IReadOnlyList<string> Stop { get; init; } = [];
    public bool Stream { get; init; }
    /// <summary>stream_options.include_usage: a last chunk carries the usage.</summary>
    public bool IncludeUsage { get; init; }
}

public sealed record ChatCompletionRequest(string? Model, IReadOnlyList<ChatMessage> Messages, GenerationParameters Parameters);

/// <summary>A /v1/completions prompt: text, or token ids as they are.</summary>
public sealed record TextCompletionRequest(string? Model, string? PromptText, int[]? PromptIds, GenerationParameters Parameters);

/// <summary>
/// Reads OpenAI request bodies strictly where a mistake would change the answer (types, ranges, roles) and refuses
/// what the server cannot do (n &gt; 1, logprobs, tools, images) rather than ignore it; fields that do not affect
/// the answer (user, metadata, store, ...) are ignored, as llama-server and vLLM do.
/// </summary>
public static class OpenAiRequests
{
    /// <summary>Roles the chat template receives; "developer" is OpenAI's newer name for "system".</summary>
    private static readonly Dictionary<string, string> Roles = new(StringComparer.Ordinal)
    {
        ["system"] = "system", ["developer"] = "system", ["user"] = "user", ["assistant"] = "assistant",
    };

    public static ChatCompletionRequest ParseChat(JsonElement body)
    {
        RequireObject(body, "The request body");
        if (Optional(body, "messages") is not { } messages) throw ApiError.BadRequest("'messages' is required: a list of {role, content} objects.", "messages");
        if (messages.ValueKind != JsonValueKind.Array) throw WrongType("messages", "an array", messages);
        if (messages.GetArrayLength() == 0) throw ApiError.BadRequest("'messages' must hold at least one message.", "messages");
        var list = new List<ChatMessage>();
        int index = 0;
        foreach (var m in messages.EnumerateArray())
        {
            string where = $"messages[{index++}]";
            RequireObject(m, $"'{where}'");
            string role = String(m, "role", where + ".role") ?? throw ApiError.BadRequest($"'{where}.role' is required.", where + ".role");
            if (role is "tool" or "function")
                throw ApiError.Unsupported($"'{where}.role' is '{role}': this server does not do tool or function calls.", where + ".role");
            if (!Roles.TryGetValue(role, out string? templateRole))
                throw ApiError.BadRequest($"'{where}.role' is '{role}'; the roles are system, developer, user and assistant.", where + ".role");
            if (Optional(m, "tool_calls") is { ValueKind: JsonValueKind.Array } calls && calls.GetArrayLength() > 0)
                throw ApiError.Unsupported($"'{where}.tool_calls': this server does not do tool calls.", where + ".tool_calls");
            list.Add(new ChatMessage(templateRole, Content(m, where, allowMissing: role == "assistant")));
        }
        foreach (string name in (string[])["tools", "functions"])
            if (Optional(body, name) is { ValueKind: JsonValueKind.Array } t && t.GetArrayLength() > 0)
                throw ApiError.Unsupported($"'{name}': this server does not do tool or function calls.", name);
        if (Optional(body, "response_format") is { } format)
        {
            RequireObject(format, "'response_format'");
            if (String(format, "type", "response_format.type") is { } type && type != "text")
                throw ApiError.Unsupported($"'response_format.type' is '{type}'; only 'text' is supported.", "response_format.type");
        }
        if (Bool(body, "logprobs") == true) throw ApiError.Unsupported("'logprobs' is not supported.", "logprobs");
        if (Optional(body, "top_logprobs") is not null) throw ApiError.Unsupported("'top_logprobs' is not supported.", "top_logprobs");
        // max_completion_tokens is the newer name; when both come, it wins.
        int? maxTokens = Integer(body, "max_completion_tokens", 1, int.MaxValue) ?? Integer(body, "max_tokens", 1, int.MaxValue);
        return new ChatCompletionRequest(String(body, "model", "model"), list, Parameters(body, maxTokens));
    }

    public static TextCompletionRequest ParseCompletion(JsonElement body)
    {
        RequireObject(body, "The request body");
        if (Optional(body, "prompt") is not { } prompt) throw ApiError.BadRequest("'prompt' is required: a string or a list of token ids.", "prompt");
        // One prompt per request: a list of one string or of one id list is that prompt.
        if (prompt.ValueKind == JsonValueKind.Array && prompt.GetArrayLength() == 1 && prompt[0].ValueKind is JsonValueKind.String or JsonValueKind.Array)
            prompt = prompt[0];
        string? text = null;
        int[]? ids = null;
        if (prompt.ValueKind == JsonValueKind.String) text = prompt.GetString()!;
        else if (prompt.ValueKind == JsonValueKind.Array && prompt.EnumerateArray().All(e => e.ValueKind == JsonValueKind.Number))
        {
            ids = prompt.EnumerateArray().Select(e => e.TryGetInt32(out int id) && id >= 0 ? id
                : throw ApiError.BadRequest("'prompt' token ids must be non-negative integers.", "prompt")).ToArray();
            if (ids.Length == 0) throw ApiError.BadRequest("'prompt' holds no token ids.", "prompt");
        }
        else if (prompt.ValueKind == JsonValueKind.Array && prompt.EnumerateArray().All(e => e.ValueKind is JsonValueKind.String or JsonValueKind.Array))
            throw ApiError.Unsupported("'prompt' holds several prompts; send one prompt per request.", "prompt");
        else throw WrongType("prompt", "a string or a list of token ids", prompt);
        if (Optional(body, "suffix") is not null) throw ApiError.Unsupported("'suffix' (insertion) is not supported.", "suffix");
        if (Bool(body, "echo") == true) throw ApiError.Unsupported("'echo' is not supported.", "echo");
        if (Integer(body, "logprobs", 0, 5) is > 0) throw ApiError.Unsupported("'logprobs' is not supported.", "logprobs");
        if (Integer(body, "best_of", 1, 20) is > 1) throw ApiError.Unsupported("'best_of' > 1 is not supported.", "best_of");
        // OpenAI's completions default: 16 tokens.
        int maxTokens = Integer(body, "max_tokens", 1, int.MaxValue) ?? 16;
        return new TextCompletionRequest(String(body, "model", "model"), text, ids, Parameters(body, maxTokens));
    }

    private static GenerationParameters Parameters(JsonElement body, int? maxTokens)
    {
        if (Integer(body, "n", 1, 128) is > 1) throw ApiError.Unsupported("'n' > 1 is not supported: ask once per choice.", "n");
        foreach (string name in (string[])["presence_penalty", "frequency_penalty"])
            if (Number(body, name, -2, 2) is { } v && v != 0)
                throw ApiError.Unsupported($"'{name}' is not supported (use repetition_penalty).", name);
        if (Optional(body, "logit_bias") is { ValueKind: JsonValueKind.Object } bias && bias.EnumerateObject().Any())
            throw ApiError.Unsupported("'logit_bias' is not supported.", "logit_bias");
        bool stream = Bool(body, "stream") ?? false;
        bool includeUsage = false;
        if (Optional(body, "stream_options") is { } options)
        {
            RequireObject(options, "'stream_options'");
            if (!stream) throw ApiError.BadRequest("'stream_options' is only allowed with 'stream': true.", "stream_options");
            includeUsage = Bool(options, "include_usage", "stream_options.include_usage") ?? false;
        }
        return new GenerationParameters
        {
            MaxTokens = maxTokens,
            Temperature = Number(body, "temperature", 0, 2),
            TopP = Number(body, "top_p", 0, 1) is { } p ? (p > 0 ? p : throw ApiError.BadRequest("'top_p' must be greater than 0.", "top_p")) : null,
            TopK = Integer(body, "top_k", -1, int.MaxValue) is { } k ? Math.Max(k, 0) : null,
            Seed = Optional(body, "seed") is { } seed ? (seed.ValueKind == JsonValueKind.Number && seed.TryGetInt64(out long s) ? s : throw WrongType("seed", "an integer", seed)) : null,
            RepetitionPenalty = Number(body, "repetition_penalty", 0, 10) is { } r ? (r > 0 ? r : throw ApiError.BadRequest("'repetition_penalty' must be greater than 0.", "repetition_penalty")) : null,
            IgnoreEos = Bool(body, "ignore_eos") ?? false,
            Stop = Stop(body),
            Stream = stream,
            IncludeUsage = includeUsage,
        };
    }

    /// <summary>stop: a string or up to 4 strings (OpenAI's limit), none empty.</summary>
    private static IReadOnlyList<string> Stop(JsonElement body)
    {
        if (Optional(body, "stop") is not { } stop) return [];
        string[] list = stop.ValueKind switch
        {
            JsonValueKind.String => [stop.GetString()!],
            JsonValueKind.Array => stop.EnumerateArray().Select(e => e.ValueKind == JsonValueKind.String ? e.GetString()! : throw WrongType("stop", "a string or a list of strings", stop)).ToArray(),
            _ => throw WrongType("stop", "a string or a list of strings", stop),
        };
        if (list.Length > 4) throw ApiError.BadRequest($"'stop' holds {list.Length} sequences; at most 4 are allowed.", "stop");
        if (list.Any(s => s.Length == 0)) throw ApiError.BadRequest("'stop' sequences must not be empty.", "stop");
        return list;
    }

    /// <summary>A message's content: a string, or a list of text parts (image parts are refused).</summary>
    private static string Content(JsonElement message, string where, bool allowMissing)
    {
        string param = where + ".content";
        if (Optional(message, "content") is not { } content)
            return allowMissing ? "" : throw ApiError.BadRequest($"'{param}' is required.", param);
        if (content.ValueKind == JsonValueKind.String) return content.GetString()!;
        if (content.ValueKind != JsonValueKind.Array) throw WrongType(param, "a string or a list of content parts", content);
        var text = new System.Text.StringBuilder();
        int i = 0;
        foreach (var part in content.EnumerateArray())
        {
            string partWhere = $"{param}[{i++}]";
            RequireObject(part, $"'{partWhere}'");
            string type = String(part, "type", partWhere + ".type") ?? throw ApiError.BadRequest($"'{partWhere}.type' is required.", partWhere + ".type");
            if (type != "text")
                throw ApiError.Unsupported($"'{partWhere}' is a '{type}' part; this model takes text only.", partWhere + ".type");
            text.Append(String(part, "text", partWhere + ".text") ?? throw ApiError.BadRequest($"'{partWhere}.text' is required.", partWhere + ".text"));
        }
        return text.ToString();
    }

    private static void RequireObject(JsonElement e, string what)
    {
        if (e.ValueKind != JsonValueKind.Object) throw ApiError.BadRequest($"{what} must be a JSON object, not {Kind(e)}.", null);
    }

    /// <summary>A field's value; absent and null are the same (OpenAI clients send null for "not set").</summary>
    private static JsonElement? Optional(JsonElement o, string name) =>
        o.TryGetProperty(name, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;

    private static string? String(JsonElement o, string name, string param) => Optional(o, name) is not { } v ? null
        : v.ValueKind == JsonValueKind.String ? v.GetString() : throw WrongType(param, "a string", v);

    private static bool? Bool(JsonElement o, string name, string? param = null) => Optional(o, name) is not { } v ? null
        : v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : throw WrongType(param ?? name, "true or false", v);

    private static double? Number(JsonElement o, string name, double min, double max)
    {
        if (Optional(o, name) is not { } v) return null;
        if (v.ValueKind != JsonValueKind.Number) throw WrongType(name, "a number", v);
        double d = v.GetDouble();
        return d >= min && d <= max ? d
            : throw ApiError.BadRequest(string.Create(CultureInfo.InvariantCulture, $"'{name}' is {d}; it must be between {min} and {max}."), name);
    }

    private static int? Integer(JsonElement o, string name, int min, int max)
    {
        if (Optional(o, name) is not { } v) return null;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt64(out long n)) throw WrongType(name, "an integer", v);
        return n >= min && n <= max ? (int)n
            : throw ApiError.BadRequest(string.Create(CultureInfo.InvariantCulture, $"'{name}' is {n}; it must be between {min} and {max}."), name);
    }

    private static ApiError WrongType(string param, string expected, JsonElement got) =>
        ApiError.BadRequest($"'{param}' must be {expected}, not {Kind(got)}.", param);

    private static string Kind(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.String => "a string",
        JsonValueKind.Number => "a number",
        JsonValueKind.True or JsonValueKind.False => "a boolean",
        JsonValueKind.Array => "an array",
        JsonValueKind.Object => "an object",
        _ => "null",
    };
}
