#!/usr/bin/perl

# mdm-standin.pl - a stand-in MDM server for demos and tests, not an MDM
# server.  It answers an enrollment request with a fixed configuration
# profile, a check-in with 200, and records every request it receives,
# so tests can see exactly what nginx passed upstream.

use strict;
use warnings;

use Digest::SHA qw(sha256_hex);
use Fcntl qw(:flock O_RDWR O_CREAT);
use File::Path qw(make_path);
use Getopt::Long qw(GetOptions);
use IO::Select;
use IO::Socket::INET;
use JSON::PP;
use POSIX qw(strftime WNOHANG _exit);
use Time::HiRes qw(time sleep);

=head1 NAME

mdm-standin.pl - a stand-in MDM server for demos and tests

=head1 SYNOPSIS

    perl t/lib/mdm-standin.pl --listen 127.0.0.1:PORT --record DIR \
        [--pid FILE] [--port-file FILE] [--lifetime SECONDS]

=head1 DESCRIPTION

Listens on the loopback address given (port 0 picks a free port, which
is printed to stderr and written to C<--port-file>), one forked process
per connection, HTTP/1.0 and HTTP/1.1 with keep-alive, request bodies
by Content-Length or chunked, up to 64 MB.

Every request is recorded in the C<--record> directory as

    NNNNNN.raw    the bytes as received
    NNNNNN.req    request line and headers as received, then the body
                  (de-chunked when it came chunked)
    NNNNNN.json   method, uri, version, headers ([name, value] in
                  order), body_length, body_sha256, chunked, raw_length,
                  peer, time and the response status; written last

Answers:

    path containing /enroll   200 application/x-apple-aspen-config, a
                              configuration profile with a com.apple.mdm
                              payload listing com.apple.mdm.token
    check-in content type     200 and no body; GetToken gets a plist
                              with a stand-in TokenData
    anything else             200 text/plain "stand-in MDM server"

Request headers for tests:

    X-Standin-Status: NNN         answer with this status (200-599)
    X-Standin-Delay-Ms: N         wait N ms (at most 60000) first
    X-Standin-Profile-Size: N     pad the profile to exactly N bytes

Responses carry C<X-Standin-Request: NNNNNN>, the record name, and an
enrollment response echoes C<X-Paired-Phone-UDID> as
C<X-Standin-Paired-Phone-UDID>.  SIGTERM or SIGINT stops the server and
its connections; it also stops by itself after C<--lifetime> seconds
(default 3600).

=cut

my $MAX_BODY = 64 * 1024 * 1024;
my $MAX_HEAD = 64 * 1024;
my $MAX_CHILDREN = 64;
my $MAX_REQUESTS = 1000;
my $IDLE_TIMEOUT = 75;
my $REQUEST_TIMEOUT = 30;
my $MAX_DELAY_MS = 60_000;

my $CHECKIN_TYPE = 'application/x-apple-aspen-mdm-checkin';
my $PROFILE_TYPE = 'application/x-apple-aspen-config';

my %REASON = (
    100 => 'Continue', 200 => 'OK', 201 => 'Created',
    204 => 'No Content', 301 => 'Moved Permanently', 302 => 'Found',
    304 => 'Not Modified', 400 => 'Bad Request', 401 => 'Unauthorized',
    403 => 'Forbidden', 404 => 'Not Found', 405 => 'Method Not Allowed',
    408 => 'Request Timeout', 410 => 'Gone', 413 => 'Content Too Large',
    429 => 'Too Many Requests', 431 => 'Request Header Fields Too Large',
    500 => 'Internal Server Error', 502 => 'Bad Gateway',
    503 => 'Service Unavailable', 504 => 'Gateway Timeout',
);

my %opt = (lifetime => 3600);
my $stop = 0;
my %children;

main();

sub main {
    GetOptions(\%opt, 'listen=s', 'record=s', 'pid=s', 'port-file=s',
        'lifetime=i') or usage();
    usage() unless $opt{listen} && !@ARGV && $opt{lifetime} > 0;

    $SIG{$_} = sub { $stop = 1 } for qw(TERM INT HUP);
    $SIG{PIPE} = 'IGNORE';

    my ($addr, $port) = parse_listen($opt{listen});
    if (defined $opt{record}) {
        make_path($opt{record});
        die "mdm-standin: $opt{record} is not a directory\n"
            unless -d $opt{record};
    }

    my $listener = IO::Socket::INET->new(
        LocalAddr => $addr,
        LocalPort => $port,
        Proto     => 'tcp',
        Listen    => 128,
        ReuseAddr => 1,
    ) or die "mdm-standin: cannot listen on $addr:$port: $@\n";

    $port = $listener->sockport;
    write_file($opt{pid}, "$$\n") if $opt{pid};
    write_file($opt{'port-file'}, "$port\n") if $opt{'port-file'};

    $| = 1;
    print STDERR "mdm-standin: a stand-in MDM server for demos and tests,"
        . " not an MDM server\n";
    print STDERR "mdm-standin: listening on $addr:$port\n";

    serve($listener);
    shutdown_children();
    unlink $opt{pid} if $opt{pid};
    exit 0;
}

sub usage {
    print STDERR "usage: mdm-standin.pl --listen 127.0.0.1:PORT"
        . " [--record DIR] [--pid FILE] [--port-file FILE]"
        . " [--lifetime SECONDS]\n";
    exit 2;
}

sub parse_listen {
    my ($listen) = @_;
    my ($addr, $port) = $listen =~ /^(\d+\.\d+\.\d+\.\d+):(\d+)$/
        or die "mdm-standin: --listen takes ADDRESS:PORT, got $listen\n";
    die "mdm-standin: $addr is not a loopback address\n"
        unless $addr =~ /^127\./;
    die "mdm-standin: bad port $port\n" if $port > 65535;
    return ($addr, $port);
}

sub write_file {
    my ($file, $data) = @_;
    open my $fh, '>:raw', $file or die "mdm-standin: open $file: $!\n";
    print {$fh} $data;
    close $fh or die "mdm-standin: close $file: $!\n";
}


# the accepting process

sub serve {
    my ($listener) = @_;
    my $deadline = time + $opt{lifetime};
    my $select = IO::Select->new($listener);

    while (!$stop && time < $deadline) {
        reap();
        if (keys %children >= $MAX_CHILDREN) {
            sleep 0.05;
            next;
        }
        next unless $select->can_read(0.5);

        my $client = $listener->accept or next;
        my $pid = fork;
        if (!defined $pid) {
            warn "mdm-standin: fork: $!\n";
            close $client;
            next;
        }
        if ($pid == 0) {
            close $listener;
            $SIG{$_} = 'DEFAULT' for qw(TERM INT HUP);
            connection($client);
            _exit(0);
        }
        $children{$pid} = 1;
        close $client;
    }
}

sub reap {
    while ((my $pid = waitpid(-1, WNOHANG)) > 0) {
        delete $children{$pid};
    }
}

sub shutdown_children {
    kill 'TERM', keys %children if %children;
    my $until = time + 3;
    while (%children && time < $until) {
        reap();
        sleep 0.05 if %children;
    }
    kill 'KILL', keys %children if %children;
    reap();
}


# one connection: requests until close, idle timeout or the limit

sub connection {
    my ($sock) = @_;
    binmode $sock;
    my $c = { sock => $sock, buf => '', raw => '' };
    $c->{peer} = $sock->peerhost . ':' . $sock->peerport;

    for (1 .. $MAX_REQUESTS) {
        my $req = read_request($c) or last;
        my $keep = handle($c, $req);
        last unless $keep;
    }
    close $sock;
}

sub fill {
    my ($c, $deadline) = @_;
    my $left = $deadline - time;
    return 0 if $left <= 0;
    return 0 unless IO::Select->new($c->{sock})->can_read($left);
    my $n = sysread $c->{sock}, $c->{buf}, 65536, length $c->{buf};
    return $n ? 1 : 0;
}

sub take {
    my ($c, $n) = @_;
    my $bytes = substr $c->{buf}, 0, $n, '';
    $c->{raw} .= $bytes;
    return $bytes;
}

sub read_request {
    my ($c) = @_;
    $c->{raw} = '';

    my $head = read_head($c) // return undef;
    my $req = parse_head($head);
    if (!$req) {
        respond($c, { status => 400, close => 1 }, text(400));
        return undef;
    }
    $req->{head} = $head;

    my $err = read_body($c, $req);
    if ($err) {
        respond($c, { status => $err, close => 1 }, text($err));
        return undef;
    }
    $req->{raw} = $c->{raw};
    return $req;
}

sub read_head {
    my ($c) = @_;
    my $deadline = time + $IDLE_TIMEOUT;
    my $started = 0;

    while (1) {
        # empty lines before a request line are allowed and skipped
        $c->{buf} =~ s/^(?:\r?\n)+//;
        if ($c->{buf} =~ /\r?\n\r?\n/) {
            return take($c, $+[0]) if $+[0] <= $MAX_HEAD;
        }
        if (length $c->{buf} > $MAX_HEAD) {
            respond($c, { status => 431, close => 1 }, text(431));
            return undef;
        }
        if (!$started && length $c->{buf}) {
            $started = 1;
            $deadline = time + $REQUEST_TIMEOUT;
        }
        return undef unless fill($c, $deadline);
    }
}

sub parse_head {
    my ($head) = @_;
    my @lines = split /\r?\n/, $head;
    my ($method, $uri, $version) =
        shift(@lines) =~ m{^([!-~]+) (\S+) HTTP/(\d\.\d)$} or return undef;

    my @headers;
    for my $line (@lines) {
        my ($name, $value) = $line =~ /^([!-9;-~]+):[ \t]*(.*?)[ \t]*$/
            or return undef;
        push @headers, [$name, $value];
    }
    return {
        method  => $method,
        uri     => $uri,
        version => $version,
        headers => \@headers,
    };
}

sub header {
    my ($req, $name) = @_;
    for my $h (@{ $req->{headers} }) {
        return $h->[1] if lc $h->[0] eq lc $name;
    }
    return undef;
}

sub read_body {
    my ($c, $req) = @_;
    my $te = header($req, 'Transfer-Encoding');
    my $len = header($req, 'Content-Length');

    $req->{chunked} = defined $te && $te =~ /\bchunked\s*$/i ? 1 : 0;
    $req->{body} = '';
    return 400 if defined $te && !$req->{chunked};

    if (!$req->{chunked}) {
        return 0 unless defined $len;
        return 400 unless $len =~ /^\d{1,12}$/;
        return 413 if $len > $MAX_BODY;
        return 0 if $len == 0;
    }
    continue_100($c, $req);

    return read_chunked($c, $req) if $req->{chunked};
    return read_length($c, $req, $len);
}

sub continue_100 {
    my ($c, $req) = @_;
    my $expect = header($req, 'Expect');
    return unless defined $expect && lc $expect eq '100-continue';
    return unless $req->{version} eq '1.1';
    write_all($c, "HTTP/1.1 100 Continue\r\n\r\n");
}

sub read_length {
    my ($c, $req, $len) = @_;
    my $deadline = time + $REQUEST_TIMEOUT;

    while (length $c->{buf} < $len) {
        return 400 unless fill($c, $deadline);
    }
    $req->{body} = take($c, $len);
    return 0;
}

sub read_chunked {
    my ($c, $req) = @_;
    my $deadline = time + $REQUEST_TIMEOUT;

    while (1) {
        my $line = read_line($c, $deadline) // return 400;
        my ($hex) = $line =~ /^([0-9A-Fa-f]{1,8})[ \t]*(?:;[^\r\n]*)?\r?\n$/
            or return 400;
        my $size = hex $hex;
        last if $size == 0;
        return 413 if length($req->{body}) + $size > $MAX_BODY;

        while (length $c->{buf} < $size + 2) {
            return 400 unless fill($c, $deadline);
        }
        $req->{body} .= take($c, $size);
        return 400 unless take($c, 2) eq "\r\n";
    }

    # trailer fields, then the empty line
    for (1 .. 100) {
        my $line = read_line($c, $deadline) // return 400;
        return 0 if $line =~ /^\r?\n$/;
    }
    return 400;
}

sub read_line {
    my ($c, $deadline) = @_;
    while (1) {
        my $i = index $c->{buf}, "\n";
        return take($c, $i + 1) if $i >= 0 && $i < 8192;
        return undef if $i >= 0 || length $c->{buf} >= 8192;
        return undef unless fill($c, $deadline);
    }
}


# answering

sub handle {
    my ($c, $req) = @_;
    my ($status, $type, $body, @extra) = answer($req);
    my $res = {
        status => $status,
        type   => $type,
        extra  => \@extra,
        close  => !keep_alive($req),
        head   => $req->{method} eq 'HEAD',
    };

    my $id = record($c, $req, $res);
    push @extra, 'X-Standin-Request' => $id if defined $id;

    my $delay = header($req, 'X-Standin-Delay-Ms');
    if (defined $delay && $delay =~ /^\d{1,9}$/) {
        sleep(($delay > $MAX_DELAY_MS ? $MAX_DELAY_MS : $delay) / 1000);
    }

    respond($c, $res, $body) or return 0;
    return !$res->{close};
}

sub keep_alive {
    my ($req) = @_;
    my $conn = lc(header($req, 'Connection') // '');
    return 0 if $conn =~ /\bclose\b/;
    return 1 if $req->{version} eq '1.1';
    return $conn =~ /\bkeep-alive\b/ ? 1 : 0;
}

sub answer {
    my ($req) = @_;
    my ($status, $type, $body, @extra) = route($req);

    my $forced = header($req, 'X-Standin-Status');
    $status = $forced if defined $forced && $forced =~ /^[2-5]\d\d$/;
    return ($status, $type, $body, @extra);
}

sub route {
    my ($req) = @_;
    (my $path = $req->{uri}) =~ s/\?.*//s;
    my $ctype = header($req, 'Content-Type') // '';

    if (index($path, '/enroll') >= 0) {
        my @extra;
        my $phone = header($req, 'X-Paired-Phone-UDID');
        push @extra, 'X-Standin-Paired-Phone-UDID' => $phone
            if defined $phone && $phone =~ /^[\x21-\x7e]{1,128}$/;
        return (200, $PROFILE_TYPE, profile($req), @extra);
    }
    if ($ctype =~ m{^\Q$CHECKIN_TYPE\E\s*(?:;|$)}i) {
        return (200, 'application/xml', get_token_answer())
            if is_get_token($req->{body});
        return (200, undef, '');
    }
    return (200, 'text/plain', "stand-in MDM server\n");
}

sub is_get_token {
    my ($body) = @_;
    return $body =~ m{<key>\s*MessageType\s*</key>\s*
                      <string>\s*GetToken\s*</string>}x
        || ($body =~ /^bplist00/ && index($body, 'GetToken') >= 0);
}

sub text {
    my ($status) = @_;
    return ($REASON{$status} // 'Error') . "\n";
}

sub respond {
    my ($c, $res, $body) = @_;
    my $status = $res->{status};
    my $reason = $REASON{$status} // 'Status';
    my $bodiless = $status < 200 || $status == 204 || $status == 304;
    $body = '' if $bodiless;

    my @h = (
        'Server' => 'mdm-standin',
        'Date'   => strftime('%a, %d %b %Y %H:%M:%S GMT', gmtime),
        'X-Standin' => 'stand-in MDM server, not an MDM server',
    );
    push @h, 'Content-Type' => $res->{type} if defined $res->{type};
    push @h, 'Content-Length' => length $body unless $bodiless;
    push @h, @{ $res->{extra} || [] };
    push @h, 'Connection' => $res->{close} ? 'close' : 'keep-alive';

    my $out = "HTTP/1.1 $status $reason\r\n";
    for (my $i = 0; $i < @h; $i += 2) {
        $out .= "$h[$i]: $h[$i + 1]\r\n";
    }
    $out .= "\r\n";
    $out .= $body unless $res->{head};
    return write_all($c, $out);
}

sub write_all {
    my ($c, $data) = @_;
    my $deadline = time + $REQUEST_TIMEOUT;
    my $select = IO::Select->new($c->{sock});
    my $off = 0;

    while ($off < length $data) {
        my $left = $deadline - time;
        return 0 if $left <= 0 || !$select->can_write($left);
        my $n = syswrite $c->{sock}, $data, 65536, $off;
        return 0 unless $n;
        $off += $n;
    }
    return 1;
}


# the stand-in documents

sub plist_header {
    return qq{<?xml version="1.0" encoding="UTF-8"?>\n}
        . qq{<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" }
        . qq{"http://www.apple.com/DTDs/PropertyList-1.0.dtd">\n};
}

sub get_token_answer {
    return plist_header() . <<'END';
<plist version="1.0">
<!-- from a stand-in MDM server: not a pairing token -->
<dict>
  <key>TokenData</key>
  <data>c3RhbmQtaW4=</data>
</dict>
</plist>
END
}

sub profile {
    my ($req) = @_;
    my $xml = plist_header() . profile_body();

    my $want = header($req, 'X-Standin-Profile-Size');
    return $xml unless defined $want && $want =~ /^\d{1,9}$/;
    $want = $MAX_BODY if $want > $MAX_BODY;
    return pad($xml, $want);
}

sub pad {
    my ($xml, $want) = @_;
    my $need = $want - length $xml;
    return $xml if $need <= 0;

    # padding goes before </plist>: a comment, or blanks if too short
    my $fill = $need >= 8 ? '<!--' . ('x' x ($need - 8)) . "-->\n"
                          : "\n" x $need;
    $xml =~ s{</plist>\n\z}{$fill</plist>\n};
    return $xml;
}

sub profile_body {
    return <<'END';
<plist version="1.0">
<dict>
  <key>PayloadContent</key>
  <array>
    <dict>
      <key>AccessRights</key>
      <integer>8191</integer>
      <key>CheckInURL</key>
      <string>https://mdm.example.test/mdm/checkin</string>
      <key>CheckOutWhenRemoved</key>
      <true/>
      <key>PayloadDescription</key>
      <string>Stand-in MDM payload; no MDM server is behind it.</string>
      <key>PayloadDisplayName</key>
      <string>Stand-in MDM (not an MDM server)</string>
      <key>PayloadIdentifier</key>
      <string>test.standin.mdm</string>
      <key>PayloadType</key>
      <string>com.apple.mdm</string>
      <key>PayloadUUID</key>
      <string>6C1E0F6A-3D52-4B8E-9A61-2F7C9B0D4E13</string>
      <key>PayloadVersion</key>
      <integer>1</integer>
      <key>ServerCapabilities</key>
      <array>
        <string>com.apple.mdm.per-user-connections</string>
        <string>com.apple.mdm.bootstraptoken</string>
        <string>com.apple.mdm.token</string>
      </array>
      <key>ServerURL</key>
      <string>https://mdm.example.test/mdm/server</string>
      <key>SignMessage</key>
      <true/>
      <key>Topic</key>
      <string>com.apple.mgmt.External.standin</string>
    </dict>
  </array>
  <key>PayloadDescription</key>
  <string>Served by a stand-in MDM server for demos and tests.</string>
  <key>PayloadDisplayName</key>
  <string>Stand-in MDM enrollment (not an MDM server)</string>
  <key>PayloadIdentifier</key>
  <string>test.standin.enrollment</string>
  <key>PayloadOrganization</key>
  <string>MDM Watch Tests</string>
  <key>PayloadType</key>
  <string>Configuration</string>
  <key>PayloadUUID</key>
  <string>0B8D5C7E-91A4-4F2B-8C3D-5E6F7A8B9C0D</string>
  <key>PayloadVersion</key>
  <integer>1</integer>
</dict>
</plist>
END
}


# recording

sub record {
    my ($c, $req, $res) = @_;
    my $dir = $opt{record} // return undef;
    my $id = sprintf '%06d', next_number($dir);

    my $req_bytes = $req->{head} . $req->{body};
    write_file("$dir/$id.raw", $req->{raw});
    write_file("$dir/$id.req", $req_bytes);

    my $json = JSON::PP->new->canonical->utf8->encode({
        id          => $id,
        time        => time,
        peer        => $c->{peer},
        method      => $req->{method},
        uri         => $req->{uri},
        version     => $req->{version},
        headers     => $req->{headers},
        chunked     => $req->{chunked} ? JSON::PP::true : JSON::PP::false,
        body_length => length $req->{body},
        body_sha256 => sha256_hex($req->{body}),
        raw_length  => length $req->{raw},
        status      => 0 + $res->{status},
    });
    write_file("$dir/$id.json.tmp", "$json\n");
    rename "$dir/$id.json.tmp", "$dir/$id.json"
        or die "mdm-standin: rename $dir/$id.json: $!\n";
    return $id;
}

sub next_number {
    my ($dir) = @_;
    my $file = "$dir/counter";
    sysopen my $fh, $file, O_RDWR | O_CREAT
        or die "mdm-standin: open $file: $!\n";
    flock $fh, LOCK_EX or die "mdm-standin: flock $file: $!\n";

    my $n = <$fh> // 0;
    $n = ($n =~ /^(\d+)/ ? $1 : 0) + 1;
    seek $fh, 0, 0;
    truncate $fh, 0;
    syswrite $fh, "$n\n";
    close $fh;
    return $n;
}
