namespace LlmBuild.Benchmarks;

/// <summary>A benchmark: a name for the command line and a run that prints its figures.</summary>
public interface IBenchmark
{
    string Name { get; }
    string Description { get; }
    int Run(string[] args);
}

public static class Program
{
    public static int Main(string[] args)
    {
        var all = typeof(Program).Assembly.GetTypes()
            .Where(t => typeof(IBenchmark).IsAssignableFrom(t) && t is { IsClass: true, IsAbstract: false })
            .Select(t => (IBenchmark)Activator.CreateInstance(t)!)
            .OrderBy(b => b.Name, StringComparer.Ordinal)
            .ToList();
        var chosen = args.Length > 0 ? all.FirstOrDefault(b => b.Name == args[0]) : null;
        if (chosen is null)
        {
            Console.WriteLine("usage: dotnet run -c Release --project bench/LlmBuild.Benchmarks -- <benchmark> [args]");
            foreach (var b in all) Console.WriteLine($"  {b.Name,-12} {b.Description}");
            return args.Length == 0 ? 0 : 2;
        }
        return chosen.Run(args[1..]);
    }
}
