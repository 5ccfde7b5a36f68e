using System.CommandLine;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Serving;

namespace LlmBuild.Cli.Commands;

/// <summary>
/// <c>llmbuild serve FILE.bmodel [--config DIR] [--host H] [--port P] [--api-key K] [--model-name NAME]</c>: the
/// OpenAI-compatible HTTP server over the built model on the emulator, until SIGTERM or Ctrl+C.
/// </summary>
public static class ServeCommand
{
    public static Command Create()
    {
        var bmodel = new Argument<string>("bmodel") { Description = "The built model (bin/<name>.bmodel)." };
        var config = new Option<string?>("--config") { Description = "The model's config folder (default: config/ beside the bmodel)." };
        var host = new Option<string>("--host") { Description = "Address to listen on (loopback by default; 0.0.0.0 exposes the server).", DefaultValueFactory = _ => "127.0.0.1" };
        var port = new Option<int>("--port") { Description = "TCP port.", DefaultValueFactory = _ => 8000 };
        var apiKey = new Option<string?>("--api-key") { Description = "Require 'Authorization: Bearer KEY' on /v1 (default: the LLMBUILD_API_KEY environment variable, if set)." };
        var modelName = new Option<string?>("--model-name") { Description = "The model id clients use (default: the bmodel's file name)." };
        var queue = new Option<int>("--queue") { Description = "Requests that may wait for a batch slot; more get 429.", DefaultValueFactory = _ => 64 };
        var grace = new Option<int>("--shutdown-grace") { Description = "Seconds in-flight requests may finish after SIGTERM before they are cancelled.", DefaultValueFactory = _ => 10 };
        var command = new Command("serve", "Serve a built bmodel over the OpenAI HTTP API (chat completions, completions, streaming) on the CPU emulator.");
        command.Arguments.Add(bmodel);
        foreach (var o in new Option[] { config, host, port, apiKey, modelName, queue, grace }) command.Options.Add(o);
        command.SetAction(parse =>
        {
            var options = new ServeOptions
            {
                Host = parse.GetValue(host)!,
                Port = parse.GetValue(port),
                ApiKey = parse.GetValue(apiKey) ?? Environment.GetEnvironmentVariable("LLMBUILD_API_KEY"),
                QueueCapacity = parse.GetValue(queue),
                ShutdownGrace = TimeSpan.FromSeconds(parse.GetValue(grace)),
            };
            var model = ServedModel.Load(parse.GetValue(bmodel)!, parse.GetValue(config), parse.GetValue(modelName));
            var server = OpenAiServer.StartAsync(model, options).GetAwaiter().GetResult();
            Console.WriteLine($"Serving {model.Name} (Batch {server.Engine.Slots}, SeqLength {server.Engine.SeqLength}) at {server.Address}v1 — Ctrl+C or SIGTERM stops.");
            if (options.ApiKey is null && options.Host is not ("127.0.0.1" or "::1" or "localhost"))
                Console.Error.WriteLine($"warning {ErrorCodes.ServeExposedWithoutKey}: listening on {options.Host} without an API key: anyone who reaches this port can use the model (--api-key).");
            server.WaitForShutdownAsync().GetAwaiter().GetResult();
            server.DisposeAsync().AsTask().GetAwaiter().GetResult();
            Console.WriteLine("Stopped.");
            return 0;
        });
        return command;
    }
}
