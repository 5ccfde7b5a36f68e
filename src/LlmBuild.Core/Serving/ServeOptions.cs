namespace LlmBuild.Core.Serving;

/// <summary>How <c>llmbuild serve</c> listens and admits requests.</summary>
public sealed record ServeOptions
{
    /// <summary>Address to bind: loopback unless told otherwise, so a model is never exposed by accident.</summary>
    public string Host { get; init; } = "127.0.0.1";

    /// <summary>TCP port; 0 picks a free one (tests).</summary>
    public int Port { get; init; } = 8000;

    /// <summary>When set, every /v1 request must carry <c>Authorization: Bearer &lt;key&gt;</c>.</summary>
    public string? ApiKey { get; init; }

    /// <summary>Requests that may wait for a batch slot; beyond them a request gets 429.</summary>
    public int QueueCapacity { get; init; } = 64;

    /// <summary>The largest request body accepted (413 beyond).</summary>
    public long MaxRequestBytes { get; init; } = 1 << 20;

    /// <summary>On SIGTERM, how long in-flight generations may run on before they are cancelled.</summary>
    public TimeSpan ShutdownGrace { get; init; } = TimeSpan.FromSeconds(10);
}
