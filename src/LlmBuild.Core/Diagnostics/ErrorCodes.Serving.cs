namespace LlmBuild.Core.Diagnostics;

public static partial class ErrorCodes
{
    [Code("A request to `llmbuild serve` is malformed: invalid JSON, a field of the wrong type, a value out of range or an unknown message role (HTTP 400).")]
    public const string ServeBadRequest = "LLMB0801";
    [Code("A request asks for something the server does not do: n > 1, logprobs, tools, images or another unsupported parameter (HTTP 400).")]
    public const string ServeUnsupportedParameter = "LLMB0802";
    [Code("A request to `llmbuild serve` lacks the API key or gives a wrong one (HTTP 401).")]
    public const string ServeUnauthorized = "LLMB0803";
    [Code("A request names a model or path the server does not serve (HTTP 404), or uses the wrong HTTP method (HTTP 405).")]
    public const string ServeNotFound = "LLMB0804";
    [Code("A request body is larger than the server's limit (HTTP 413).")]
    public const string ServeRequestTooLarge = "LLMB0805";
    [Code("Every batch slot is busy and the waiting queue is full; retry after the Retry-After seconds (HTTP 429).")]
    public const string ServeQueueFull = "LLMB0806";
    [Code("The server is shutting down and takes no new requests, or cancelled a generation while stopping (HTTP 503).")]
    public const string ServeShuttingDown = "LLMB0807";
    [Code("A generation failed inside the runtime (HTTP 500).")]
    public const string ServeGenerationFailed = "LLMB0808";
    [Code("`llmbuild serve` cannot listen: a bad --host or --port, or the address is in use.")]
    public const string ServeCannotListen = "LLMB0809";
    [Code("`llmbuild serve` listens on a non-loopback address without an API key (warning).")]
    public const string ServeExposedWithoutKey = "LLMB0810";
}
