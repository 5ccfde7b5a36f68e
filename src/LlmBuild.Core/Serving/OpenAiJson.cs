using System.Text.Encodings.Web;
using System.Text.Json;

namespace LlmBuild.Core.Serving;

/// <summary>The response bodies, in the shapes OpenAI's API returns them (and its clients parse).</summary>
public static class OpenAiJson
{
    /// <summary>Text stays readable UTF-8 (not \u escapes); JSON-significant characters are still escaped.</summary>
    public static JsonWriterOptions WriterOptions { get; } = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    public static byte[] Write(Action<Utf8JsonWriter> body)
    {
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer, WriterOptions))
        {
            w.WriteStartObject();
            body(w);
            w.WriteEndObject();
        }
        return buffer.ToArray();
    }

    /// <summary>The fields every response object starts with.</summary>
    public static void Header(Utf8JsonWriter w, string id, string objectType, long created, string model)
    {
        w.WriteString("id", id);
        w.WriteString("object", objectType);
        w.WriteNumber("created", created);
        w.WriteString("model", model);
    }

    public static void Usage(Utf8JsonWriter w, int promptTokens, int completionTokens)
    {
        w.WriteStartObject("usage");
        w.WriteNumber("prompt_tokens", promptTokens);
        w.WriteNumber("completion_tokens", completionTokens);
        w.WriteNumber("total_tokens", promptTokens + completionTokens);
        w.WriteEndObject();
    }

    /// <summary>
    /// The one choice: a chat answer in <paramref name="messageField"/> ("message" whole, "delta" a stream's piece,
    /// where a null <paramref name="text"/> writes no content), a completion's in "text".
    /// </summary>
    public static void Choice(Utf8JsonWriter w, string? messageField, string? text, bool withRole, string? finishReason)
    {
        w.WriteStartArray("choices");
        w.WriteStartObject();
        w.WriteNumber("index", 0);
        if (messageField is not null)
        {
            w.WriteStartObject(messageField);
            if (withRole) w.WriteString("role", "assistant");
            if (text is not null) w.WriteString("content", text);
            if (messageField == "message") w.WriteNull("refusal");
            w.WriteEndObject();
        }
        else w.WriteString("text", text ?? "");
        w.WriteNull("logprobs");
        FinishReason(w, finishReason);
        w.WriteEndObject();
        w.WriteEndArray();
    }

    /// <summary>finish_reason: null while a stream runs.</summary>
    private static void FinishReason(Utf8JsonWriter w, string? reason)
    {
        if (reason is null) w.WriteNull("finish_reason"); else w.WriteString("finish_reason", reason);
    }
}
