#!/usr/bin/perl

# fake-redis.pl - a scripted Redis for fault tests, not a Redis.  It
# speaks just enough RESP for ngx_mdm_watch_module's commands, or
# misbehaves in the one way the command line chooses.

use strict;
use warnings;

use Errno qw(EAGAIN EINTR EWOULDBLOCK);
use Getopt::Long qw(GetOptions);
use IO::Select;
use IO::Socket::INET;
use Socket qw(SOL_SOCKET SO_LINGER);
use Time::HiRes qw(time);

=head1 NAME

fake-redis.pl - a scripted Redis peer for fault tests

=head1 SYNOPSIS

    perl t/lib/fake-redis.pl --listen 127.0.0.1:PORT --mode MODE
        [--delay-ms N] [--announce BYTES] [--send BYTES]
        [--replies N] [--eval-reply N] [--lifetime SECONDS]

=head1 DESCRIPTION

One process, one thread, every socket non-blocking: a stalled client
never blocks another.  Commands are read as RESP arrays (inline commands
too, for redis-cli style probes); one reply is owed per command.  What
the reply is depends on C<--mode>:

    normal            PING +PONG, SET +OK, GET nil, DEL :1, EVAL the
                      integer of --eval-reply (1), anything else +OK
    slow              as normal, each reply --delay-ms late
    stall             reads every command, never answers
    oversized         a bulk string announced as --announce bytes
                      (64 MB), of which --send bytes (4 MB) are sent;
                      then nothing more
    error             -ERR scripted failure
    wrong-type        SET gets :1 and EVAL gets +OK: well-formed replies
                      of the wrong type
    bad-type          a reply whose type byte is '!'
    negative-length   a bulk string of length -7
    negative-array    an array of -7 elements
    absurd-array      an array of 2147483647 elements, none sent
    huge-array        an array of 9223372036854775807 elements
    non-numeric-length  a bulk string of length "12ab"
    non-numeric-array   an array of "xyz" elements
    deep-array        arrays nested 10000 deep
    close-mid-reply   "$16\r\nhalf" and then the connection is closed
    close-mid-line    "+OK" without its CRLF, then closed
    disconnect-after-reply
                      answers as normal, then closes the connection
                      once --replies (1) replies went out
    double-reply      answers as normal, each reply twice: the second
                      answers nothing that was asked
    unsolicited       answers as normal, and --delay-ms (100) after its
                      first reply sends "+OK" unasked, on an idle
                      connection
    refuse            accepts and closes at once
    reset             accepts, reads the first command and resets the
                      connection (RST)

Every connection and command is logged to stderr, one line each, as

    fake-redis: conn N open|closed|reset
    fake-redis: conn N cmd NAME

C<--lifetime> (default 300 s) bounds how long it runs; SIGTERM, SIGINT
or SIGHUP stop it at once.  At most 64 clients; a client that sends more
than 1 MB without completing a command is dropped.

=cut

my $MAX_CLIENTS = 64;
my $MAX_INPUT = 1024 * 1024;
my $CHUNK = 65536;

my %opt = (
    mode         => 'normal',
    'delay-ms'   => 0,
    announce     => 64 * 1024 * 1024,
    send         => 4 * 1024 * 1024,
    replies      => 1,
    'eval-reply' => 1,
    lifetime     => 300,
);

my @MODES = qw(normal slow stall oversized error wrong-type bad-type
    negative-length negative-array absurd-array huge-array
    non-numeric-length non-numeric-array deep-array close-mid-reply
    close-mid-line disconnect-after-reply double-reply unsolicited refuse
    reset);

my $stop = 0;
my %clients;
my $next_id = 0;
my $filler = 'z' x $CHUNK;

main();

sub main {
    GetOptions(\%opt, 'listen=s', 'mode=s', 'delay-ms=i', 'announce=i',
        'send=i', 'replies=i', 'eval-reply=i', 'lifetime=i')
        or usage();
    $opt{'delay-ms'} ||= 100 if $opt{mode} eq 'unsolicited';
    usage() unless $opt{listen} && !@ARGV;
    die "fake-redis: unknown mode $opt{mode}\n"
        unless grep { $_ eq $opt{mode} } @MODES;

    my ($addr, $port) = $opt{listen} =~ /^(127\.\d+\.\d+\.\d+):(\d+)$/
        or die "fake-redis: --listen takes 127.x.x.x:PORT\n";
    $opt{lifetime} = 3600 if $opt{lifetime} > 3600;

    my $listener = IO::Socket::INET->new(LocalAddr => $addr,
        LocalPort => $port, Proto => 'tcp', Listen => 64, ReuseAddr => 1)
        or die "fake-redis: cannot listen on $addr:$port: $@\n";
    $listener->blocking(0);

    $| = 1;
    $SIG{$_} = sub { $stop = 1 } for qw(TERM INT HUP);
    $SIG{PIPE} = 'IGNORE';
    say_log("listening on $addr:$port, mode $opt{mode}");

    run($listener);
    close $_->{sock} for values %clients;
    exit 0;
}

sub usage {
    print STDERR "usage: fake-redis.pl --listen 127.0.0.1:PORT"
        . " --mode MODE [--delay-ms N] [--announce N] [--send N]"
        . " [--replies N] [--eval-reply N] [--lifetime S]\n";
    exit 2;
}

sub say_log {
    print STDERR "fake-redis: @_\n";
}

sub run {
    my ($listener) = @_;
    my $deadline = time + $opt{lifetime};

    while (!$stop && time < $deadline) {
        my $rd = IO::Select->new($listener, map { $_->{sock} }
            grep { !$_->{closing} } values %clients);
        my $wr = IO::Select->new(map { $_->{sock} }
            grep { wants_write($_) } values %clients);

        my ($r, $w) = IO::Select->select($rd, $wr, undef, wait_time());
        for my $s (@{ $r // [] }) {
            if ($s == $listener) {
                accept_client($listener);
            } else {
                read_client($clients{ fileno $s }) if $clients{ fileno $s };
            }
        }
        for my $s (@{ $w // [] }) {
            write_client($clients{ fileno $s }) if $clients{ fileno $s };
        }
        release_due();
    }
}

sub wait_time {
    my $next = 0.5;
    for my $c (values %clients) {
        for my $p (@{ $c->{pending} }) {
            my $left = $p->[0] - time;
            $next = $left if $left < $next;
        }
    }
    return $next < 0.001 ? 0.001 : $next;
}

sub wants_write {
    my ($c) = @_;
    return length $c->{out} || $c->{fill} > 0;
}

sub accept_client {
    my ($listener) = @_;
    my $sock = $listener->accept or return;

    if (keys %clients >= $MAX_CLIENTS) {
        close $sock;
        return;
    }
    $sock->blocking(0);
    binmode $sock;

    my $c = {
        id      => ++$next_id,
        sock    => $sock,
        in      => '',
        out     => '',
        fill    => 0,
        pending => [],
        replies => 0,
    };
    $clients{ fileno $sock } = $c;
    say_log("conn $c->{id} open");

    close_client($c, 'closed') if $opt{mode} eq 'refuse';
}

sub close_client {
    my ($c, $how) = @_;
    delete $clients{ fileno $c->{sock} };
    if ($how eq 'reset') {
        setsockopt($c->{sock}, SOL_SOCKET, SO_LINGER, pack('ii', 1, 0));
    }
    close $c->{sock};
    say_log("conn $c->{id} $how");
}

sub read_client {
    my ($c) = @_;
    my $n = sysread $c->{sock}, $c->{in}, $CHUNK, length $c->{in};

    if (!defined $n) {
        return if $! == EAGAIN || $! == EWOULDBLOCK || $! == EINTR;
        close_client($c, 'closed');
        return;
    }
    if ($n == 0) {
        close_client($c, 'closed');
        return;
    }

    while (defined(my $cmd = parse_command($c))) {
        if (!ref $cmd) {
            close_client($c, 'closed');
            return;
        }
        say_log("conn $c->{id} cmd " . uc($cmd->[0] // ''));
        answer($c, $cmd);
        return unless $clients{ fileno $c->{sock} // -1 };
    }

    if (length $c->{in} > $MAX_INPUT) {
        close_client($c, 'closed');
    }
}

# one command from the input, undef when incomplete, '' when malformed

sub parse_command {
    my ($c) = @_;
    my $buf = \$c->{in};

    return undef unless length $$buf;

    if (substr($$buf, 0, 1) ne '*') {
        my $i = index $$buf, "\n";
        return undef if $i < 0;
        my $line = substr $$buf, 0, $i + 1, '';
        $line =~ s/\r?\n$//;
        my @words = split ' ', $line;
        return @words ? \@words : parse_command($c);
    }

    my $pos = 0;
    my $line = take_line($buf, \$pos) // return undef;
    my ($count) = $line =~ /^\*(\d{1,6})$/ or return '';

    my @args;
    for (1 .. $count) {
        my $head = take_line($buf, \$pos) // return undef;
        my ($len) = $head =~ /^\$(\d{1,9})$/ or return '';
        return '' if $len > $MAX_INPUT;
        return undef if length($$buf) < $pos + $len + 2;
        push @args, substr $$buf, $pos, $len;
        $pos += $len + 2;
    }
    substr($$buf, 0, $pos) = '';
    return \@args;
}

sub take_line {
    my ($buf, $pos) = @_;
    my $i = index $$buf, "\r\n", $$pos;
    return undef if $i < 0;
    my $line = substr $$buf, $$pos, $i - $$pos;
    $$pos = $i + 2;
    return $line;
}

sub answer {
    my ($c, $cmd) = @_;
    my $mode = $opt{mode};
    my $name = uc($cmd->[0] // '');

    # after a reply that ends the conversation, nothing more is said
    return if $mode eq 'stall' || $c->{close_after} || $c->{silent};

    if ($mode eq 'reset') {
        close_client($c, 'reset');
        return;
    }

    if ($mode eq 'slow') {
        push @{ $c->{pending} },
            [time + $opt{'delay-ms'} / 1000, normal_reply($name)];
        return;
    }

    if ($mode eq 'oversized') {
        $c->{out} .= "\$$opt{announce}\r\n";
        $c->{fill} = $opt{send} < $opt{announce} ? $opt{send}
                                                 : $opt{announce};
        $c->{silent} = 1;
        return;
    }

    my %scripted = (
        'error'              => "-ERR scripted failure\r\n",
        'bad-type'           => "!oops\r\n",
        'negative-length'    => "\$-7\r\n",
        'negative-array'     => "*-7\r\n",
        'absurd-array'       => "*2147483647\r\n",
        'huge-array'         => "*9223372036854775807\r\n",
        'non-numeric-length' => "\$12ab\r\nabcdefghijkl\r\n",
        'non-numeric-array'  => "*xyz\r\n",
        'deep-array'         => "*1\r\n" x 10000 . ":1\r\n",
        'close-mid-reply'    => "\$16\r\nhalf",
        'close-mid-line'     => '+OK',
    );

    if (exists $scripted{$mode}) {
        $c->{out} .= $scripted{$mode};
        $c->{close_after} = 1 if $mode =~ /^close-/;
        $c->{silent} = 1 if $mode ne 'error';
        return;
    }

    if ($mode eq 'wrong-type') {
        $c->{out} .= $name eq 'EVAL' ? "+OK\r\n"
                   : $name eq 'SET'  ? ":1\r\n"
                   :                   normal_reply($name);
        return;
    }

    $c->{out} .= normal_reply($name);
    $c->{out} .= normal_reply($name) if $mode eq 'double-reply';
    $c->{replies}++;

    if ($mode eq 'unsolicited' && $c->{replies} == 1) {
        push @{ $c->{pending} }, [time + $opt{'delay-ms'} / 1000, "+OK\r\n"];
    }
    $c->{close_after} = 1 if $mode eq 'disconnect-after-reply'
        && $c->{replies} >= $opt{replies};
}

sub normal_reply {
    my ($name) = @_;
    return "+PONG\r\n" if $name eq 'PING';
    return "\$-1\r\n" if $name eq 'GET';
    return ":1\r\n" if $name eq 'DEL' || $name eq 'EXISTS';
    return ":$opt{'eval-reply'}\r\n" if $name eq 'EVAL';
    return "*0\r\n" if $name eq 'KEYS';
    return "+OK\r\n";
}

sub release_due {
    my $now = time;
    for my $c (values %clients) {
        my @keep;
        for my $p (@{ $c->{pending} }) {
            if ($p->[0] <= $now) {
                $c->{out} .= $p->[1];
            } else {
                push @keep, $p;
            }
        }
        $c->{pending} = \@keep;
    }
}

sub write_client {
    my ($c) = @_;

    if (!length $c->{out} && $c->{fill} > 0) {
        my $n = $c->{fill} < $CHUNK ? $c->{fill} : $CHUNK;
        $c->{out} = substr $filler, 0, $n;
        $c->{fill} -= $n;
    }

    my $n = syswrite $c->{sock}, $c->{out};
    if (!defined $n) {
        return if $! == EAGAIN || $! == EWOULDBLOCK || $! == EINTR;
        close_client($c, 'closed');
        return;
    }
    substr($c->{out}, 0, $n) = '';

    if ($c->{close_after} && !length $c->{out} && $c->{fill} == 0) {
        close_client($c, 'closed');
    }
}
