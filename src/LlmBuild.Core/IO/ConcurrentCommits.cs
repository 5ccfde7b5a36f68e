using System.Collections.Concurrent;
using System.Runtime.ExceptionServices;
using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Core.IO;

/// <summary>
/// Lets the durable writes of a stage's many small files wait for the disk together instead of one after another.
/// Inside <see cref="Run"/>, <see cref="AtomicFile.Write"/> writes its temporary file as always and hands it over here:
/// a few I/O threads fsync each temporary and only then rename it into place, so every file keeps the guarantee it had
/// ("its data is on disk before its name points at it": old file, new file or no file, even across a power loss), but
/// the fsyncs of dozens of files are in flight at once and the file system commits them in a few journal transactions
/// rather than one each (~6 ms apiece on the build machine). The writer's thread goes on to its next piece meanwhile.
/// <see cref="Run"/> returns only when every handed-over file is in place (or throws the first failure, every
/// temporary of a failed commit removed), so the stage's outputs exist when its task ends, as before.
/// Only for writers that do not read their own outputs back before <see cref="Run"/> ends: until its commit a file's
/// path still shows the old file (or none). A second write or a delete of a path waits for that path's pending commit.
/// </summary>
public sealed class ConcurrentCommits
{
    /// <summary>Fsyncs in flight at once: enough for the journal to batch them, few enough to stay cheap.</summary>
    private const int Threads = 8;

    private static readonly AsyncLocal<ConcurrentCommits?> Ambient = new();

    private readonly BlockingCollection<Commit> _queue = new();
    private readonly ConcurrentDictionary<string, Commit> _pending = new(StringComparer.Ordinal);
    private readonly ConcurrentQueue<Exception> _failures = new();
    private readonly List<Thread> _threads = [];

    private ConcurrentCommits()
    {
    }

    /// <summary>The commits durable writes on this logical thread (and the tasks it starts) hand their files to; null: none.</summary>
    internal static ConcurrentCommits? Current => Ambient.Value;

    /// <summary>
    /// Runs <paramref name="body"/> with its durable writes committed concurrently, then waits for every commit. A failure
    /// of <paramref name="body"/> still waits for the commits it started (their files are complete) before it propagates.
    /// </summary>
    public static void Run(Action body)
    {
        var commits = new ConcurrentCommits();
        var outer = Ambient.Value;
        Ambient.Value = commits;
        try
        {
            body();
        }
        catch
        {
            Ambient.Value = outer;
            commits.Finish();
            throw;
        }
        Ambient.Value = outer;
        commits.Finish();
        var failures = commits._failures.ToArray();
        if (failures.Length == 1) ExceptionDispatchInfo.Capture(failures[0]).Throw();
        if (failures.Length > 1) throw new AggregateException(failures);
    }

    /// <summary>
    /// Runs <paramref name="action"/> right after <paramref name="path"/> is in place: on the I/O thread that renamed it,
    /// when its commit is pending (a failure of the action fails <see cref="Run"/>), else at once. For a file that must
    /// be written only after another is at its path (a weight file's identity sidecar), as soon as it may be.
    /// </summary>
    public static void AfterInPlace(string path, Action action)
    {
        if (Current is { } commits && commits._pending.TryGetValue(Path.GetFullPath(path), out Commit? commit) && commit.Then(action)) return;
        action();
    }

    /// <summary>Takes over a written (flushed, not yet fsynced) temporary: it is fsynced, closed and renamed to <paramref name="path"/>.</summary>
    internal void Add(string path, string temp, FileStream stream)
    {
        WaitFor(path);
        var commit = new Commit(path, temp, stream);
        _pending[path] = commit;
        lock (_threads)
        {
            // Threads start with the first commits (a stage with nothing to write starts none).
            if (_threads.Count < Threads)
            {
                var thread = new Thread(Work) { IsBackground = true, Name = "LlmBuild commits" };
                thread.Start();
                _threads.Add(thread);
            }
        }
        _queue.Add(commit);
    }

    /// <summary>Waits until no commit of <paramref name="path"/> is pending (before another write or a delete of it).</summary>
    internal void WaitFor(string path)
    {
        if (_pending.TryGetValue(path, out var earlier)) earlier.Done.Wait();
    }

    private void Work()
    {
        foreach (Commit c in _queue.GetConsumingEnumerable())
        {
            try
            {
                try
                {
                    using (c.Stream) c.Stream.Flush(flushToDisk: true);
                    File.Move(c.Temp, c.Path, overwrite: true);
                    foreach (Action action in c.InPlace()) action();
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                {
                    AtomicFile.TryDelete(c.Temp);
                    _failures.Enqueue(new LlmBuildException(ErrorCodes.WriteFailed,
                        $"Cannot write '{c.Path}': {e.Message}. Check free disk space and permissions.", c.Path, e));
                }
                catch (Exception e)
                {
                    AtomicFile.TryDelete(c.Temp);
                    _failures.Enqueue(e);
                }
            }
            finally
            {
                c.InPlace(); // a failed commit runs nothing after it
                _pending.TryRemove(new KeyValuePair<string, Commit>(c.Path, c));
                c.Done.Set();
            }
        }
    }

    private void Finish()
    {
        _queue.CompleteAdding();
        lock (_threads)
            foreach (Thread t in _threads) t.Join();
        _queue.Dispose();
    }

    private sealed record Commit(string Path, string Temp, FileStream Stream)
    {
        private readonly List<Action> _then = [];
        private bool _renamed;

        public ManualResetEventSlim Done { get; } = new(false);

        /// <summary>Queues an action for after the rename; false when the rename already happened (run it yourself).</summary>
        public bool Then(Action action)
        {
            lock (_then)
            {
                if (_renamed) return false;
                _then.Add(action);
                return true;
            }
        }

        /// <summary>Marks the file renamed (or its commit over) and returns the queued actions, once.</summary>
        public Action[] InPlace()
        {
            lock (_then)
            {
                _renamed = true;
                Action[] actions = [.. _then];
                _then.Clear();
                return actions;
            }
        }
    }
}
