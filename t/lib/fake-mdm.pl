#!/usr/bin/perl

# fake-mdm.pl - a scripted MDM server for fault tests, not an MDM server:
# it reads a request and then answers it, or misbehaves in the way the
# request's X-Fault header (or --mode) chooses.

use strict;
use warnings;

use Digest::SHA qw(sha256_hex);
use Errno qw(EAGAIN EINTR EWOULDBLOCK);
use Getopt::Long qw(GetOptions);
use IO::Select;
use IO::Socket::INET;
use Socket qw(SOL_SOCKET SO_LINGER);
use Time::HiRes qw(time);

=head1 NAME

fake-mdm.pl - a scripted MDM server peer for fault tests

=head1 SYNOPSIS

    perl t/lib/fake-mdm.pl --listen 127.0.0.1:PORT --record FILE
        [--mode FAULT] [--lifetime SECONDS]

=head1 DESCRIPTION

One process, non-blocking sockets.  Each request (HTTP/1.0 or 1.1, body
by Content-Length or chunked, at most 1 MB) is appended to the
C<--record> file as one line, written before the answer:

    METHOD URI FAULT BODY_LENGTH BODY_SHA256 PAIRED_PHONE

(PAIRED_PHONE is the X-Paired-Phone-UDID header, "-" without it).  The
fault is the request's C<X-Fault> header, else C<--mode> (default ok):

    ok              200 text/plain "fake MDM server", then close
    reset           no answer; the connection is reset (RST)
    close           no answer; the connection is closed (FIN)
    stall           no answer, the connection is kept open
    garbage-header  a status line, then a header line without a colon
    garbage         binary bytes, no status line at all
    bad-length      a status line and "Content-Length: abc"
    truncated       200 with Content-Length 1000, 10 bytes, then close

C<--lifetime> (default 300 s) bounds the run; SIGTERM, SIGINT or SIGHUP
stop it at once.  At most 64 connections.

=cut

my $MAX_CLIENTS = 64;
my $MAX_REQUEST = 1024 * 1024 + 65536;

my %opt = (mode => 'ok', lifetime => 300);
my %FAULTS = map { $_ => 1 }
    qw(ok reset close stall garbage-header garbage bad-length truncated);

my $stop = 0;
my %clients;
my $next_id = 0;

main();

sub main {
    GetOptions(\%opt, 'listen=s', 'record=s', 'mode=s', 'lifetime=i')
        or usage();
    usage() unless $opt{listen} && $opt{record} && !@ARGV;
    die "fake-mdm: unknown mode $opt{mode}\n" unless $FAULTS{ $opt{mode} };

    my ($addr, $port) = $opt{listen} =~ /^(127\.\d+\.\d+\.\d+):(\d+)$/
        or die "fake-mdm: --listen takes 127.x.x.x:PORT\n";
    $opt{lifetime} = 3600 if $opt{lifetime} > 3600;

    my $listener = IO::Socket::INET->new(LocalAddr => $addr,
        LocalPort => $port, Proto => 'tcp', Listen => 64, ReuseAddr => 1)
        or die "fake-mdm: cannot listen on $addr:$port: $@\n";
    $listener->blocking(0);

    $| = 1;
    $SIG{$_} = sub { $stop = 1 } for qw(TERM INT HUP);
    $SIG{PIPE} = 'IGNORE';
    print STDERR "fake-mdm: listening on $addr:$port, mode $opt{mode}\n";

    run($listener);
    close $_->{sock} for values %clients;
    exit 0;
}

sub usage {
    print STDERR "usage: fake-mdm.pl --listen 127.0.0.1:PORT --record FILE"
        . " [--mode FAULT] [--lifetime S]\n";
    exit 2;
}

sub run {
    my ($listener) = @_;
    my $deadline = time + $opt{lifetime};

    while (!$stop && time < $deadline) {
        my $rd = IO::Select->new($listener, map { $_->{sock} }
            values %clients);
        my $wr = IO::Select->new(map { $_->{sock} }
            grep { length $_->{out} } values %clients);

        my ($r, $w) = IO::Select->select($rd, $wr, undef, 0.5);
        for my $s (@{ $r // [] }) {
            if ($s == $listener) {
                accept_client($listener);
            } elsif (my $c = $clients{ fileno $s }) {
                read_client($c);
            }
        }
        for my $s (@{ $w // [] }) {
            my $c = $clients{ fileno($s) // -1 } or next;
            write_client($c);
        }
    }
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
    $clients{ fileno $sock } =
        { id => ++$next_id, sock => $sock, in => '', out => '' };
}

sub close_client {
    my ($c, $reset) = @_;
    delete $clients{ fileno $c->{sock} };
    setsockopt($c->{sock}, SOL_SOCKET, SO_LINGER, pack('ii', 1, 0))
        if $reset;
    close $c->{sock};
}

sub read_client {
    my ($c) = @_;
    my $n = sysread $c->{sock}, $c->{in}, 65536, length $c->{in};

    if (!defined $n) {
        return if $! == EAGAIN || $! == EWOULDBLOCK || $! == EINTR;
        close_client($c);
        return;
    }
    if ($n == 0 || length $c->{in} > $MAX_REQUEST) {
        close_client($c);
        return;
    }
    return if $c->{answered};

    my $req = parse_request(\$c->{in}) // return;
    if (!ref $req) {
        $c->{out} = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
            . "Connection: close\r\n\r\n";
        $c->{close_after} = 1;
        $c->{answered} = 1;
        return;
    }

    $c->{answered} = 1;
    act($c, $req);
}

# a complete request, undef when incomplete, '' when malformed

sub parse_request {
    my ($buf) = @_;
    my $end = index $$buf, "\r\n\r\n";
    return undef if $end < 0;

    my ($line, @lines) = split /\r\n/, substr($$buf, 0, $end);
    my ($method, $uri) = $line =~ m{^(\S+) (\S+) HTTP/\d\.\d$} or return '';
    my %h;
    for (@lines) {
        my ($k, $v) = /^([^:]+):\s*(.*?)\s*$/ or return '';
        $h{ lc $k } = $v;
    }

    my $rest = substr $$buf, $end + 4;
    my $body;
    if (($h{'transfer-encoding'} // '') =~ /chunked/i) {
        $body = dechunk($rest) // return undef;
    } else {
        my $len = $h{'content-length'} // 0;
        return '' unless $len =~ /^\d{1,8}$/;
        return undef if length $rest < $len;
        $body = substr $rest, 0, $len;
    }
    return { method => $method, uri => $uri, header => \%h, body => $body };
}

sub dechunk {
    my ($data) = @_;
    my $out = '';
    while ($data =~ s/^([0-9a-fA-F]{1,8})[^\r\n]*\r\n//) {
        my $size = hex $1;
        return $out if $size == 0 && $data =~ /\r\n/;
        return undef if $size == 0 || length $data < $size + 2;
        $out .= substr $data, 0, $size;
        substr($data, 0, $size + 2) = '';
    }
    return undef;
}

sub act {
    my ($c, $req) = @_;
    my $fault = $req->{header}{'x-fault'} // $opt{mode};
    $fault = 'ok' unless $FAULTS{$fault};

    record($req, $fault);

    if ($fault eq 'reset') {
        close_client($c, 1);
        return;
    }
    if ($fault eq 'close') {
        close_client($c);
        return;
    }
    return if $fault eq 'stall';

    my %answer = (
        'ok' => "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
            . "Content-Length: 16\r\nX-Fake-Mdm: ok\r\n"
            . "Connection: close\r\n\r\nfake MDM server\n",
        'garbage-header' => "HTTP/1.1 200 OK\r\nContent-Type text/plain\r\n"
            . "\x01\x02\x03 \xff\xfe\r\n\r\nbody\n",
        'garbage' => join('', map { chr((($_ * 37) + 11) % 256) } 1 .. 600),
        'bad-length' => "HTTP/1.1 200 OK\r\nContent-Length: abc\r\n"
            . "Connection: close\r\n\r\nbody\n",
        'truncated' => "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
            . "Content-Length: 1000\r\nConnection: close\r\n\r\n"
            . "0123456789",
    );
    $c->{out} = $answer{$fault};
    $c->{close_after} = 1;
}

sub record {
    my ($req, $fault) = @_;
    my $phone = $req->{header}{'x-paired-phone-udid'};
    $phone = '-' unless defined $phone && length $phone;

    open my $fh, '>>', $opt{record} or die "fake-mdm: $opt{record}: $!\n";
    printf {$fh} "%s %s %s %d %s %s\n", $req->{method}, $req->{uri}, $fault,
        length $req->{body}, sha256_hex($req->{body}), $phone;
    close $fh;
}

sub write_client {
    my ($c) = @_;
    my $n = syswrite $c->{sock}, $c->{out};

    if (!defined $n) {
        return if $! == EAGAIN || $! == EWOULDBLOCK || $! == EINTR;
        close_client($c);
        return;
    }
    substr($c->{out}, 0, $n) = '';
    close_client($c) if $c->{close_after} && !length $c->{out};
}
