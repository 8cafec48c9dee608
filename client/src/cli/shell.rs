//! `shell`: an interactive shell with the CLI's commands, plus transactions.
//!
//! Each line is split shell-style and parsed by clap with the same argument
//! definitions as the command line (`get k --local`, `put k v --if-version 0`,
//! `scan --prefix p`...). Between `begin` and `commit`/`rollback`, reads and
//! writes go through one [`TxnSession`], with the `txn` command's responses.
//!
//! On a terminal, lines are read with rustyline (history in memory only).
//! Otherwise they are read plainly, without prompts, so tests can drive the
//! shell; its exit code is then that of the last failed command (0 if none).

use std::io::{BufRead, IsTerminal, Write};

use clap::error::ErrorKind;
use clap::{Parser, Subcommand};
use rustyline::error::ReadlineError;
use rustyline::DefaultEditor;
use tokio::runtime::Runtime;
use trireme_client::{Client, Error, Isolation};

use super::line::split_words;
use super::txn::{Step, TxnCommand, TxnSession};
use super::{
    admin, exit_code, kv, DelArgs, GetArgs, IsolationArg, PutArgs, Reply, ScanArgs, EXIT_OK,
    EXIT_OTHER,
};

/// One shell line.
#[derive(Debug, Parser)]
#[command(
    name = "trireme shell",
    no_binary_name = true,
    disable_version_flag = true,
    help_template = "{subcommands}"
)]
struct ShellLine {
    /// The command.
    #[command(subcommand)]
    command: ShellCommand,
}

/// The shell's commands.
#[derive(Debug, Subcommand)]
enum ShellCommand {
    /// Write a value.
    Put(PutArgs),
    /// Print a key's value, or (nil).
    Get(GetArgs),
    /// Delete a key.
    #[command(alias = "delete")]
    Del(DelArgs),
    /// Print the keys and values of a range.
    Scan(ScanArgs),
    /// Show each endpoint's node status.
    Status,
    /// Show each endpoint's data checksum.
    Checksum,
    /// Begin a transaction (serializable unless told otherwise).
    Begin {
        /// Isolation level.
        #[arg(value_enum)]
        isolation: Option<IsolationArg>,
    },
    /// Commit the open transaction.
    Commit,
    /// Roll back the open transaction.
    Rollback,
    /// Leave the shell (rolls back an open transaction).
    #[command(alias = "quit")]
    Exit,
}

/// Where lines come from.
enum Input {
    /// A terminal, with line editing.
    Editor(Box<DefaultEditor>),
    /// A pipe or file.
    Plain(std::io::StdinLock<'static>),
}

impl Input {
    fn open() -> Input {
        if std::io::stdin().is_terminal() {
            let config = rustyline::Config::builder().auto_add_history(true).build();
            if let Ok(editor) = DefaultEditor::with_config(config) {
                return Input::Editor(Box::new(editor));
            }
        }
        Input::Plain(std::io::stdin().lock())
    }

    /// The next line, or `None` at the end of input.
    fn read(&mut self, prompt: &str) -> Option<String> {
        match self {
            Input::Editor(editor) => loop {
                match editor.readline(prompt) {
                    Ok(line) => return Some(line),
                    // Ctrl-C abandons the line, as in other shells.
                    Err(ReadlineError::Interrupted) => continue,
                    Err(ReadlineError::Eof) => return None,
                    Err(e) => {
                        eprintln!("error: cannot read input: {e}");
                        return None;
                    }
                }
            },
            Input::Plain(stdin) => {
                let mut line = String::new();
                match stdin.read_line(&mut line) {
                    Ok(0) => None,
                    Ok(_) => Some(line),
                    Err(e) => {
                        eprintln!("error: cannot read input: {e}");
                        None
                    }
                }
            }
        }
    }

    fn interactive(&self) -> bool {
        matches!(self, Input::Editor(_))
    }
}

/// The shell's state.
struct Shell<'a> {
    /// The runtime requests run on.
    runtime: &'a Runtime,
    /// The client.
    client: &'a Client,
    /// JSON output.
    json: bool,
    /// The open transaction, if any.
    txn: Option<TxnSession>,
    /// The exit code of the last failed command.
    last_failure: Option<u8>,
}

/// Runs the shell until `exit` or the end of input; returns the exit code.
pub fn run(runtime: &Runtime, client: &Client, json: bool) -> u8 {
    let mut input = Input::open();
    let mut shell = Shell {
        runtime,
        client,
        json,
        txn: None,
        last_failure: None,
    };
    if input.interactive() {
        println!(
            "trireme shell: connected to {} (type `help`, `exit`)",
            client.endpoints().join(",")
        );
    }
    loop {
        let prompt = if shell.txn.is_some() {
            "trireme(txn)> "
        } else {
            "trireme> "
        };
        let Some(line) = input.read(prompt) else {
            break;
        };
        if !shell.handle(&line) {
            break;
        }
    }
    if let Some(mut txn) = shell.txn.take() {
        txn.rollback();
        if input.interactive() {
            println!("open transaction rolled back");
        }
    }
    if input.interactive() {
        EXIT_OK
    } else {
        shell.last_failure.unwrap_or(EXIT_OK)
    }
}

impl Shell<'_> {
    /// Runs one line; false when the shell should exit.
    fn handle(&mut self, line: &str) -> bool {
        let words = match split_words(line) {
            Ok(words) => words,
            Err(message) => {
                self.fail(EXIT_OTHER, &format!("error: {message}"));
                return true;
            }
        };
        if words.is_empty() || words[0].starts_with('#') {
            return true;
        }
        let command = match ShellLine::try_parse_from(&words) {
            Ok(parsed) => parsed.command,
            Err(e) => {
                let _ = e.print();
                if !matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                    self.last_failure = Some(2);
                }
                return true;
            }
        };
        match command {
            ShellCommand::Exit => return false,
            ShellCommand::Begin { isolation } => self.begin(isolation.map(Into::into)),
            ShellCommand::Commit => self.finish(TxnCommand::Commit),
            ShellCommand::Rollback => self.finish(TxnCommand::Rollback),
            ShellCommand::Status => {
                self.reply(self.runtime.block_on(admin::status(self.client, self.json)))
            }
            ShellCommand::Checksum => self.reply(
                self.runtime
                    .block_on(admin::checksum(self.client, self.json)),
            ),
            other if self.txn.is_some() => match in_transaction(other) {
                Ok(command) => self.step(command),
                Err(message) => self.fail(EXIT_OTHER, &format!("error: {message}")),
            },
            ShellCommand::Get(args) => {
                let result = self.runtime.block_on(kv::get(
                    self.client,
                    &args,
                    super::Format::from_json(self.json),
                ));
                match result {
                    Ok(reply) if reply.code != EXIT_OK && reply.out.is_empty() => {
                        println!("(nil)")
                    }
                    Ok(reply) => self.reply(Ok(Reply {
                        code: EXIT_OK,
                        ..reply
                    })),
                    Err(e) => self.reply(Err(e)),
                }
            }
            ShellCommand::Put(args) => self.reply(self.runtime.block_on(kv::put(
                self.client,
                &args,
                self.json,
            ))),
            ShellCommand::Del(args) => self.reply(self.runtime.block_on(kv::del(
                self.client,
                &args,
                self.json,
            ))),
            ShellCommand::Scan(args) => self.reply(self.runtime.block_on(kv::scan(
                self.client,
                &args,
                super::Format::from_json(self.json),
            ))),
        }
        true
    }

    fn begin(&mut self, isolation: Option<Isolation>) {
        if self.txn.is_some() {
            self.fail(
                EXIT_OTHER,
                "error: a transaction is already open: commit or rollback first",
            );
            return;
        }
        let isolation = isolation.unwrap_or_default();
        let mut session = TxnSession::new(self.client.clone(), isolation);
        match self.runtime.block_on(session.begin()) {
            Ok(snapshot) => {
                if self.json {
                    println!(
                        "{}",
                        serde_json::json!({ "begin": true, "isolation": isolation.to_string(), "snapshot": snapshot })
                    );
                } else {
                    println!("BEGIN {isolation} at snapshot {snapshot}");
                }
                self.txn = Some(session);
            }
            Err(e) => self.reply(Err(e)),
        }
    }

    fn finish(&mut self, command: TxnCommand) {
        match self.txn.take() {
            Some(mut session) => {
                let step = self.runtime.block_on(session.execute(command, self.json));
                self.print_step(step);
            }
            None => self.fail(EXIT_OTHER, "error: no transaction is open (use `begin`)"),
        }
    }

    fn step(&mut self, command: TxnCommand) {
        if let Some(session) = self.txn.as_mut() {
            let step = self.runtime.block_on(session.execute(command, self.json));
            self.print_step(step);
        }
    }

    fn print_step(&mut self, step: Step) {
        println!("{}", step.line);
        if let Some(code) = step.failed {
            self.last_failure = Some(code);
        }
    }

    fn reply(&mut self, result: Result<Reply, Error>) {
        match result {
            Ok(reply) => {
                let mut stdout = std::io::stdout().lock();
                let _ = stdout.write_all(&reply.out).and_then(|()| stdout.flush());
                if let Some(note) = reply.note {
                    eprintln!("{note}");
                }
                if reply.code != EXIT_OK {
                    self.last_failure = Some(reply.code);
                }
            }
            Err(e) => self.fail(exit_code(&e), &format!("error: {e}")),
        }
    }

    fn fail(&mut self, code: u8, message: &str) {
        eprintln!("{message}");
        self.last_failure = Some(code);
    }
}

/// The transaction command for a shell command given inside `begin..commit`.
fn in_transaction(command: ShellCommand) -> Result<TxnCommand, String> {
    const NO_FLAGS: &str = "inside a transaction, reads are at its snapshot: \
                            --local and --consistency do not apply";
    match command {
        ShellCommand::Get(args) => {
            if args.read.local || args.read.consistency.is_some() {
                return Err(NO_FLAGS.into());
            }
            Ok(TxnCommand::Get(args.key))
        }
        ShellCommand::Put(args) => {
            if args.if_version.is_some() {
                return Err("--if-version is not supported inside a transaction".into());
            }
            Ok(TxnCommand::Put(args.key, args.value))
        }
        ShellCommand::Del(args) => {
            if args.if_version.is_some() {
                return Err("--if-version is not supported inside a transaction".into());
            }
            Ok(TxnCommand::Del(args.key))
        }
        ShellCommand::Scan(args) => {
            if args.read.local || args.read.consistency.is_some() {
                return Err(NO_FLAGS.into());
            }
            if args.limit != 0 || args.keys_only {
                return Err(
                    "--limit and --keys-only are not supported inside a transaction".into(),
                );
            }
            Ok(match (args.prefix, args.from, args.to) {
                (Some(prefix), _, _) => TxnCommand::Scan(prefix),
                (None, None, None) => TxnCommand::Scan(String::new()),
                (None, from, to) => {
                    TxnCommand::ScanRange(from.unwrap_or_default(), to.unwrap_or_default())
                }
            })
        }
        other => Err(format!("{other:?} is not a transaction command")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<ShellCommand, clap::Error> {
        let words = split_words(line).map_err(|m| clap::Error::raw(ErrorKind::InvalidValue, m))?;
        ShellLine::try_parse_from(words).map(|l| l.command)
    }

    #[test]
    fn shell_lines_use_the_cli_syntax() -> Result<(), clap::Error> {
        assert!(matches!(parse("get k --local")?, ShellCommand::Get(g) if g.read.local));
        assert!(
            matches!(parse("put k 'a b' --if-version 0")?, ShellCommand::Put(p) if p.value == "a b" && p.if_version == Some(0))
        );
        assert!(matches!(
            parse("begin snapshot")?,
            ShellCommand::Begin {
                isolation: Some(IsolationArg::Snapshot)
            }
        ));
        assert!(matches!(
            parse("begin")?,
            ShellCommand::Begin { isolation: None }
        ));
        assert!(matches!(parse("quit")?, ShellCommand::Exit));
        assert!(matches!(parse("delete k")?, ShellCommand::Del(_)));
        assert_eq!(
            parse("help").map(|_| ()).map_err(|e| e.kind()),
            Err(ErrorKind::DisplayHelp)
        );
        assert!(parse("get").is_err());
        Ok(())
    }

    #[test]
    fn transaction_commands_map_and_reject_flags() -> Result<(), clap::Error> {
        assert_eq!(
            in_transaction(parse("put k v")?),
            Ok(TxnCommand::Put("k".into(), "v".into()))
        );
        assert_eq!(
            in_transaction(parse("scan --from a")?),
            Ok(TxnCommand::ScanRange("a".into(), String::new()))
        );
        assert_eq!(
            in_transaction(parse("scan --prefix p")?),
            Ok(TxnCommand::Scan("p".into()))
        );
        assert!(in_transaction(parse("get k --local")?).is_err());
        assert!(in_transaction(parse("put k v --if-version 3")?).is_err());
        assert!(in_transaction(parse("scan --limit 3")?).is_err());
        Ok(())
    }
}
