using System.Text.Json;
using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Core.Serving;

/// <summary>
/// A request the server answers with an HTTP error: an OpenAI-style error object
/// <c>{"error": {"message", "type", "param", "code"}}</c> whose code is the LLMB#### code.
/// </summary>
public sealed class ApiError(int status, string code, string message, string? param = null) : Exception(message)
{
    public int Status { get; } = status;
    public string Code { get; } = code;
    /// <summary>The request field at fault (OpenAI's <c>param</c>), when there is one.</summary>
    public string? Param { get; } = param;
    /// <summary>Seconds a 429 asks the client to wait (Retry-After).</summary>
    public int? RetryAfterSeconds { get; init; }

    /// <summary>OpenAI's error type for the status.</summary>
    public string Type => Status switch
    {
        401 => "authentication_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        >= 500 => Status == 503 ? "service_unavailable_error" : "server_error",
        _ => "invalid_request_error",
    };

    public static ApiError BadRequest(string message, string? param) => new(400, ErrorCodes.ServeBadRequest, message, param);

    public static ApiError Unsupported(string message, string? param) => new(400, ErrorCodes.ServeUnsupportedParameter, message, param);

    /// <summary>A coded error from below (prompt too long, template failure, shutdown, runtime) as its HTTP answer.</summary>
    public static ApiError From(LlmBuildException e, string? param = null) => e.Code switch
    {
        ErrorCodes.ServeShuttingDown => new ApiError(503, e.Code, e.Message),
        ErrorCodes.PromptTooLong or ErrorCodes.BadTokenIds or ErrorCodes.ChatTemplateRender => new ApiError(400, e.Code, e.Message, param),
        _ => new ApiError(500, e.Code, e.Message),
    };

    /// <summary>The error object's JSON.</summary>
    public byte[] ToJson()
    {
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer, OpenAiJson.WriterOptions))
        {
            w.WriteStartObject();
            w.WriteStartObject("error");
            w.WriteString("message", Message);
            w.WriteString("type", Type);
            if (Param is null) w.WriteNull("param"); else w.WriteString("param", Param);
            w.WriteString("code", Code);
            w.WriteEndObject();
            w.WriteEndObject();
        }
        return buffer.ToArray();
    }
}
