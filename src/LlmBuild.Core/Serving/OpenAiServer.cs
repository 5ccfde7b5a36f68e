using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Runtime;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace LlmBuild.Core.Serving;

/// <summary>
/// <c>llmbuild serve</c>: the OpenAI HTTP API over one loaded model on Kestrel — POST /v1/chat/completions and
/// /v1/completions (JSON or server-sent events ending in <c>data: [DONE]</c>), GET /v1/models and /health. Every
/// request's generation runs on the shared <see cref="BatchingEngine"/>; every error is an OpenAI error object
/// carrying an LLMB#### code. Stopping (SIGTERM, <see cref="StopAsync"/>) refuses new work, lets in-flight
/// generations finish for the grace period, then cancels them.
/// </summary>
public sealed class OpenAiServer : IAsyncDisposable
{
    private static readonly byte[] DataPrefix = "data: "u8.ToArray(), EventEnd = "\n\n"u8.ToArray(), Done = "data: [DONE]\n\n"u8.ToArray();
    private readonly WebApplication _app;
    private readonly ServedModel _model;
    private readonly BatchingEngine _engine;
    private readonly ServeOptions _options;
    private readonly byte[]? _apiKey;
    private readonly long _created;
    private volatile bool _stopping;

    private OpenAiServer(WebApplication app, ServedModel model, ServeOptions options)
    {
        _app = app;
        _model = model;
        _options = options;
        _engine = new BatchingEngine(model.Emulator, model.Tokenizer.EosIds, options.QueueCapacity);
        _apiKey = options.ApiKey is { } key ? Encoding.UTF8.GetBytes(key) : null;
        _created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
    }

    /// <summary>The base address clients use (http://host:port); the API is under /v1.</summary>
    public Uri Address { get; private set; } = null!;

    public ServedModel Model => _model;
    public BatchingEngine Engine => _engine;

    /// <summary>Starts serving <paramref name="model"/>, which the server owns from now on (and disposes).</summary>
    public static async Task<OpenAiServer> StartAsync(ServedModel model, ServeOptions options, CancellationToken cancellation = default)
    {
        IPAddress address = ParseHost(options.Host);
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { ContentRootPath = AppContext.BaseDirectory });
        builder.Logging.ClearProviders();
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = options.ShutdownGrace + TimeSpan.FromSeconds(5));
        builder.Services.Configure<ConsoleLifetimeOptions>(o => o.SuppressStatusMessages = true);
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.AddServerHeader = false;
            k.Limits.MaxRequestBodySize = options.MaxRequestBytes;
            k.Listen(address, options.Port);
        });
        var app = builder.Build();
        var server = new OpenAiServer(app, model, options);
        server.Map();
        try
        {
            await app.StartAsync(cancellation);
        }
        catch (Exception e) when (e is IOException or SocketException)
        {
            await server.DisposeAsync();
            throw new LlmBuildException(ErrorCodes.ServeCannotListen, $"Cannot listen on {options.Host}:{options.Port}: {e.Message} Choose another --port (or stop what uses it).");
        }
        string bound = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        server.Address = new Uri(bound);
        return server;
    }

    /// <summary>Completes when the server has stopped (SIGTERM, Ctrl+C or <see cref="StopAsync"/>).</summary>
    public Task WaitForShutdownAsync(CancellationToken cancellation = default) => _app.WaitForShutdownAsync(cancellation);

    public Task StopAsync() => _app.StopAsync();

    public async ValueTask DisposeAsync()
    {
        await _app.DisposeAsync();
        _engine.Dispose();
        _model.Dispose();
    }

    private static IPAddress ParseHost(string host) => host switch
    {
        "localhost" => IPAddress.Loopback,
        "*" => IPAddress.Any,
        _ when IPAddress.TryParse(host, out var ip) => ip,
        _ => throw new LlmBuildException(ErrorCodes.ServeCannotListen, $"--host '{host}' is not an IP address (use 127.0.0.1, ::1, 0.0.0.0 or localhost)."),
    };

    private void Map()
    {
        var lifetime = _app.Services.GetRequiredService<IHostApplicationLifetime>();
        lifetime.ApplicationStopping.Register(() =>
        {
            _stopping = true;
            _engine.StopAccepting();
            // Kestrel waits for in-flight requests; they end when their generations do, or when the grace runs out.
            _ = Task.Run(() =>
            {
                if (!_engine.WaitIdle(_options.ShutdownGrace)) _engine.CancelAll();
            });
        });
        // Routing's own 404 and 405 have empty bodies; clients expect an error object.
        _app.UseStatusCodePages(context =>
        {
            var http = context.HttpContext;
            string message = http.Response.StatusCode == 405
                ? $"{http.Request.Method} is not allowed on {http.Request.Path}."
                : $"There is no {http.Request.Path} here; the API is /v1/chat/completions, /v1/completions, /v1/models and /health.";
            return WriteError(http, new ApiError(http.Response.StatusCode, ErrorCodes.ServeNotFound, message));
        });
        _app.Use(async (context, next) =>
        {
            if (_apiKey is not null && context.Request.Path.StartsWithSegments("/v1") && !Authorized(context.Request))
            {
                context.Response.Headers.WWWAuthenticate = "Bearer";
                await WriteError(context, new ApiError(401, ErrorCodes.ServeUnauthorized,
                    "Missing or wrong API key: send 'Authorization: Bearer <key>' with the key the server was started with (--api-key)."));
                return;
            }
            await next(context);
        });
        _app.MapPost("/v1/chat/completions", context => Handle(context, ChatCompletion));
        _app.MapPost("/v1/completions", context => Handle(context, TextCompletion));
        _app.MapGet("/v1/models", context => Handle(context, c => WriteJson(c, 200, OpenAiJson.Write(w =>
        {
            w.WriteString("object", "list");
            w.WriteStartArray("data");
            w.WriteStartObject();
            ModelCard(w);
            w.WriteEndObject();
            w.WriteEndArray();
        }))));
        _app.MapGet("/v1/models/{id}", context => Handle(context, c =>
        {
            CheckModel((string?)c.Request.RouteValues["id"]);
            return WriteJson(c, 200, OpenAiJson.Write(ModelCard));
        }));
        _app.MapGet("/health", context =>
        {
            var (busy, waiting) = _engine.Load;
            return WriteJson(context, _stopping ? 503 : 200, OpenAiJson.Write(w =>
            {
                w.WriteString("status", _stopping ? "shutting down" : "ok");
                w.WriteString("model", _model.Name);
                w.WriteNumber("slots", _engine.Slots);
                w.WriteNumber("slots_busy", busy);
                w.WriteNumber("queued", waiting);
            }));
        });
    }

    private void ModelCard(Utf8JsonWriter w)
    {
        w.WriteString("id", _model.Name);
        w.WriteString("object", "model");
        w.WriteNumber("created", _created);
        w.WriteString("owned_by", "llmbuild");
        w.WriteNumber("max_model_len", _engine.SeqLength);
    }

    private bool Authorized(HttpRequest request)
    {
        string header = request.Headers.Authorization.ToString();
        const string scheme = "Bearer ";
        if (!header.StartsWith(scheme, StringComparison.OrdinalIgnoreCase)) return false;
        // Constant time, so the key cannot be guessed byte by byte from response times.
        return CryptographicOperations.FixedTimeEquals(Encoding.UTF8.GetBytes(header[scheme.Length..].Trim()), _apiKey);
    }

    /// <summary>Runs an endpoint; its <see cref="ApiError"/>s (and coded errors from below) become error objects.</summary>
    private static async Task Handle(HttpContext context, Func<HttpContext, Task> endpoint)
    {
        try
        {
            await endpoint(context);
        }
        catch (ApiError e)
        {
            await WriteError(context, e);
        }
        catch (BatchingEngine.QueueFullException e)
        {
            context.Response.Headers.RetryAfter = e.RetryAfterSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture);
            await WriteError(context, new ApiError(429, ErrorCodes.ServeQueueFull,
                $"Every batch slot is busy and the queue is full; retry in {e.RetryAfterSeconds} s.") { RetryAfterSeconds = e.RetryAfterSeconds });
        }
        catch (LlmBuildException e)
        {
            await WriteError(context, ApiError.From(e));
        }
        catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
        {
            // The client went away; there is no one to answer.
        }
    }

    private static async Task WriteError(HttpContext context, ApiError error)
    {
        if (context.Response.HasStarted) return;
        await WriteJson(context, error.Status, error.ToJson());
    }

    private static async Task WriteJson(HttpContext context, int status, byte[] json)
    {
        context.Response.StatusCode = status;
        context.Response.ContentType = "application/json";
        context.Response.ContentLength = json.Length;
        await context.Response.Body.WriteAsync(json, context.RequestAborted);
    }

    /// <summary>The request body as JSON; a body over the size limit is a 413, anything unparsable a 400.</summary>
    private static async Task<JsonElement> ReadBody(HttpContext context)
    {
        try
        {
            using var document = await JsonDocument.ParseAsync(context.Request.Body, new JsonDocumentOptions { MaxDepth = 64 }, context.RequestAborted);
            return document.RootElement.Clone();
        }
        catch (JsonException e)
        {
            throw ApiError.BadRequest($"The request body is not valid JSON: {e.Message}", null);
        }
        catch (BadHttpRequestException e) when (e.StatusCode == StatusCodes.Status413PayloadTooLarge)
        {
            throw new ApiError(413, ErrorCodes.ServeRequestTooLarge, $"The request body is larger than the server's limit of {context.Features.Get<Microsoft.AspNetCore.Http.Features.IHttpMaxRequestBodySizeFeature>()?.MaxRequestBodySize} bytes.");
        }
    }

    private void CheckModel(string? requested)
    {
        // A client may leave the model out; naming another model is a mistake worth reporting (vLLM does the same).
        if (requested is not null && requested != _model.Name)
            throw new ApiError(404, ErrorCodes.ServeNotFound, $"The model '{requested}' does not exist; this server serves '{_model.Name}'.", "model");
    }

    private async Task ChatCompletion(HttpContext context)
    {
        var request = OpenAiRequests.ParseChat(await ReadBody(context));
        CheckModel(request.Model);
        if (_model.Template is null)
            throw ApiError.Unsupported($"The model '{_model.Name}' has no chat template in its config folder; use /v1/completions.", "messages");
        string prompt = _model.Template.Render(request.Messages, addGenerationPrompt: true);
        int[] ids = _model.Tokenizer.Encode(prompt, addSpecialTokens: false);
        await Complete(context, ids, request.Parameters, chat: true);
    }

    private async Task TextCompletion(HttpContext context)
    {
        var request = OpenAiRequests.ParseCompletion(await ReadBody(context));
        CheckModel(request.Model);
        int[] ids = request.PromptIds ?? _model.Tokenizer.Encode(request.PromptText!, addSpecialTokens: true);
        if (ids.Length == 0) throw ApiError.BadRequest("'prompt' is empty.", "prompt");
        if (ids.FirstOrDefault(id => id >= _model.Emulator.VocabSize, -1) is int bad and >= 0)
            throw ApiError.BadRequest($"'prompt' holds token id {bad}, outside the vocabulary 0..{_model.Emulator.VocabSize - 1}.", "prompt");
        await Complete(context, ids, request.Parameters, chat: false);
    }

    /// <summary>Sampling per request: generation_config.json's defaults with the request's overrides; temperature 0 is greedy.</summary>
    private GenerationSettings Settings(GenerationParameters p)
    {
        var defaults = _model.DefaultSampling;
        double temperature = p.Temperature ?? defaults.Temperature;
        SamplingOptions? sampling = temperature == 0 ? null
            : new SamplingOptions(temperature, p.TopK ?? defaults.TopK, p.TopP ?? defaults.TopP, p.RepetitionPenalty ?? defaults.RepetitionPenalty);
        int seed = p.Seed is long s ? (int)(s ^ (s >> 32)) : Random.Shared.Next();
        return new GenerationSettings(sampling, seed, p.MaxTokens, p.IgnoreEos);
    }

    private async Task Complete(HttpContext context, int[] ids, GenerationParameters parameters, bool chat)
    {
        var generation = new Generation(ids, Settings(parameters));
        try
        {
            _engine.Submit(generation);
        }
        catch (LlmBuildException e)
        {
            throw ApiError.From(e, chat ? "messages" : "prompt");
        }
        var reply = new Reply((chat ? "chatcmpl-" : "cmpl-") + Guid.NewGuid().ToString("N")[..24], DateTimeOffset.UtcNow.ToUnixTimeSeconds(),
            chat, ids.Length, parameters);
        using var leave = context.RequestAborted.Register(generation.Cancel);
        if (parameters.Stream) await Stream(context, generation, reply);
        else await Answer(context, generation, reply);
    }

    /// <summary>What every object of one reply repeats: its id, creation time, kind, and the prompt's size.</summary>
    private sealed record Reply(string Id, long Created, bool Chat, int PromptTokens, GenerationParameters Parameters);

    private void Header(Utf8JsonWriter w, Reply reply, bool chunk) => OpenAiJson.Header(w, reply.Id,
        reply.Chat ? (chunk ? "chat.completion.chunk" : "chat.completion") : "text_completion", reply.Created, _model.Name);

    /// <summary>The whole answer as one JSON object.</summary>
    private async Task Answer(HttpContext context, Generation generation, Reply reply)
    {
        var text = new StringBuilder();
        CompletionOutcome outcome;
        try
        {
            outcome = await GenerationText.ReadAsync(generation, _model.Tokenizer, reply.Parameters.Stop, piece =>
            {
                text.Append(piece);
                return Task.CompletedTask;
            }, context.RequestAborted);
        }
        catch (LlmBuildException e)
        {
            throw ApiError.From(e);
        }
        await WriteJson(context, 200, OpenAiJson.Write(w =>
        {
            Header(w, reply, chunk: false);
            OpenAiJson.Choice(w, reply.Chat ? "message" : null, text.ToString(), withRole: true, outcome.FinishReason);
            OpenAiJson.Usage(w, reply.PromptTokens, outcome.CompletionTokens);
        }));
    }

    /// <summary>The answer as server-sent events: a chunk per piece of text, a last chunk with the finish reason, [DONE].</summary>
    private async Task Stream(HttpContext context, Generation generation, Reply reply)
    {
        var cancellation = context.RequestAborted;
        context.Response.StatusCode = 200;
        context.Response.ContentType = "text/event-stream; charset=utf-8";
        context.Response.Headers.CacheControl = "no-cache";
        context.Response.Headers["X-Accel-Buffering"] = "no";
        var body = context.Response.Body;
        async Task Event(byte[] json)
        {
            await body.WriteAsync(DataPrefix, cancellation);
            await body.WriteAsync(json, cancellation);
            await body.WriteAsync(EventEnd, cancellation);
            await body.FlushAsync(cancellation);
        }
        bool includeUsage = reply.Parameters.IncludeUsage;
        byte[] Chunk(string? piece, bool first, string? finishReason) => OpenAiJson.Write(w =>
        {
            Header(w, reply, chunk: true);
            OpenAiJson.Choice(w, reply.Chat ? "delta" : null, piece, withRole: first, finishReason);
            // With include_usage every chunk says "usage": null but the last (OpenAI's stream contract).
            if (includeUsage) w.WriteNull("usage");
        });
        try
        {
            if (reply.Chat) await Event(Chunk("", first: true, null));
            var outcome = await GenerationText.ReadAsync(generation, _model.Tokenizer, reply.Parameters.Stop, piece => Event(Chunk(piece, false, null)), cancellation);
            await Event(Chunk(null, false, outcome.FinishReason));
            if (includeUsage)
                await Event(OpenAiJson.Write(w =>
                {
                    Header(w, reply, chunk: true);
                    w.WriteStartArray("choices");
                    w.WriteEndArray();
                    OpenAiJson.Usage(w, reply.PromptTokens, outcome.CompletionTokens);
                }));
            await body.WriteAsync(Done, cancellation);
            await body.FlushAsync(cancellation);
        }
        catch (LlmBuildException e)
        {
            // The status line is sent; the failure travels as an error event, as llama-server and vLLM send it.
            await Event(ApiError.From(e).ToJson());
            await body.WriteAsync(Done, cancellation);
        }
        catch (Exception e) when (e is OperationCanceledException or IOException && cancellation.IsCancellationRequested)
        {
            // The client went away mid-stream; its generation was cancelled and its slot is free.
        }
    }
}
